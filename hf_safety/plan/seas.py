"""SEAS's phases: the attack stage (both models, the judge and generation resident) and the red team / target DPO
steps, each planned on its own; and the model a judge spec loads on the GPU."""

from __future__ import annotations

from typing import Any

from .settings import GIB, OPTIMIZER_STATE_BYTES, MemoryPlan, PlanSettings
from .shapes import ModelShapes
from .terms import (
    _adapter_dtype_bytes,
    _adapter_params,
    _block_forward_per_token,
    _shard,
    _training_phase,
    _weights_bytes,
)


# Judge kinds of `load_judge` specs ("kind:model") that load no model on the GPU
_MODEL_FREE_JUDGE_KINDS = ("refusal",)


def judge_model_id(judge: str | None) -> str | None:
    """The model a SEAS judge spec loads on the GPU (`None` for string-matching judges): a `load_judge` name, a
    `kind:model` spec, or a model id / path."""
    if not judge or judge == "none":
        return None
    from ..judges.factory import _REGISTERED, JUDGE_NAMES

    if judge in _REGISTERED:  # judges registered by other packages (the toy world's): not modelled
        return None
    if judge in JUDGE_NAMES:
        kind, kwargs = JUDGE_NAMES[judge]
        return None if kind in _MODEL_FREE_JUDGE_KINDS else kwargs.get("model")
    kind, sep, argument = judge.partition(":")
    if sep and not argument.startswith("//"):
        if kind in _MODEL_FREE_JUDGE_KINDS:
            return None
        if argument:
            return argument
        default = JUDGE_NAMES.get(kind, (None, {}))[1].get("model")
        if default:
            return default
    return judge


def _seas_phases(s: PlanSettings, context: dict[str, Any]) -> dict[str, MemoryPlan]:
    target, red = context["shapes"], context["red_team"]
    judge_shapes = context["judge_shapes"]
    peft = s.lora_r > 0
    # resident across phases
    target_weights, _ = _weights_bytes(target, s)
    red_weights, _ = _weights_bytes(red, s, upcast_other=s.quant == "nf4" and peft)
    ref_adapter = lambda shapes: _adapter_params(shapes, s) * 4 if peft else 0  # noqa: E731
    adapters = lambda shapes: _adapter_params(shapes, s) * _adapter_dtype_bytes(s) if peft else 0  # noqa: E731
    state = OPTIMIZER_STATE_BYTES[s.optim]
    target_optimizer = int(_adapter_params(target, s) * (2 * _adapter_dtype_bytes(s) if state is None else state))
    judge = (0, "")
    if judge_shapes is not None:
        judge_settings = s.replace(quant=s.judge_quant, experts_bf16=False, lora_r=16)
        judge_bytes, judge_how = _weights_bytes(judge_shapes, judge_settings)
        judge = (judge_bytes, f"{context['judge_id']}: {judge_how} (loaded at init, kept)")
    notes = []
    if judge_shapes is None:
        notes.append(f"judge {s.judge!r}: no GPU model counted (a string-matching or registered judge)")

    def kv_and_prefill(shapes: ModelShapes, batch: int, prompt: int, new: int) -> int:
        kv = batch * (prompt + new) * shapes.kv_bytes_per_token
        prefill = batch * prompt * _block_forward_per_token(shapes)
        sampling = batch * shapes.vocab_size * 24  # fp32 logits, probs, sorted values + int64 indices (top-p)
        return int(kv + prefill + sampling)

    target_prompt = s.red_team_max_new_tokens + 64
    judge_prompt = s.judge_prompt_tokens + s.red_team_max_new_tokens + s.target_max_new_tokens
    generation = {
        "red team generation": kv_and_prefill(
            red,
            s.generation_batch_size * s.num_adversarial_prompts,
            s.red_team_prompt_tokens,
            s.red_team_max_new_tokens,
        ),
        "target generation": kv_and_prefill(
            target, s.generation_batch_size * s.num_responses, target_prompt, s.target_max_new_tokens
        ),
    }
    if judge_shapes is not None:
        generation["judge"] = kv_and_prefill(judge_shapes, s.judge_batch_size, judge_prompt, s.judge_max_new_tokens)
    step, step_bytes = max(generation.items(), key=lambda item: item[1])
    dequant = max(target.largest_linear, red.largest_linear) * 2 if s.quant == "nf4" else 0

    attack = MemoryPlan(
        model=context["model"], method="seas", phase="attack", settings=s, shapes=target, context=context
    )
    attack.weights = target_weights + red_weights
    attack.how["weights"] = f"target {target_weights / GIB:.1f} + red team {red_weights / GIB:.1f} GiB" + (
        " (its embeddings/head/norms fp32: prepare_model_for_kbit_training)" if s.quant == "nf4" and peft else ""
    )
    if peft:
        attack.adapters = adapters(target) + adapters(red) + ref_adapter(target) + ref_adapter(red)
        attack.how["adapters"] = "both models: the trained adapter + the fp32 'ref' adapter"
        attack.optimizer_states = target_optimizer
        attack.how["optimizer_states"] = "the target's, kept by its trainer between rounds"
    else:
        attack.reference_weights = target_weights + red_weights
        attack.how["reference_weights"] = "full fine-tuning: a frozen copy of each model"
        attack.optimizer_states = int(target.total_params * (4 if state is None else state))
        attack.how["optimizer_states"] = "the target's, kept by its trainer between rounds"
    attack.judge, attack.how["judge"] = judge
    attack.generation = step_bytes
    attack.how["generation"] = (
        f"peak step {step}: KV cache + prefill + sampling; "
        + ", ".join(f"{name} {value / GIB:.1f}" for name, value in generation.items())
        + " GiB"
    )
    attack.activations = 0
    attack.workspace = dequant
    attack.how["workspace"] = "one NF4 weight dequantized to bf16" if dequant else ""
    attack.notes.extend(notes)
    if s.num_gpus > 1:
        _shard(attack, target, s)

    phases = {"attack": attack}
    red_seq = min(s.seq_len, s.red_team_prompt_tokens + s.red_team_max_new_tokens)
    for phase, trained, other, seq_len in (
        ("red team DPO", red, target, red_seq),
        ("target DPO", target, red, s.seq_len),
    ):
        is_red = phase.startswith("red")
        other_weights = target_weights if is_red else red_weights
        other_label = "target" if is_red else "red team"
        extra: dict[str, Any] = {
            "reference_forward": True,
            "judge": judge if judge[0] else None,
            "resident": (
                other_weights,
                lambda trained_how, w=other_weights, label=other_label: (
                    f"trained: {trained_how}; {label} {w / GIB:.1f} GiB"
                ),
            ),
        }
        if peft:
            extra["resident_adapters"] = (
                adapters(other) + ref_adapter(trained) + ref_adapter(other),
                "; + the other model's adapter and both fp32 'ref' adapters",
            )
            if is_red:
                extra["resident_optimizer"] = (target_optimizer, " + the target's, kept between rounds")
        else:
            extra["reference_weights"] = (
                target_weights + red_weights,
                "full fine-tuning: a frozen copy of each model",
            )
        plan = _training_phase(
            s, context, phase, trained, seq_len, extra, upcast_other=is_red and s.quant == "nf4" and peft
        )
        plan.notes.extend(notes)
        phases[phase] = plan
    return phases
