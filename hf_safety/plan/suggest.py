"""What to change when a plan does not fit (or what room it leaves when it does): [`MemoryPlan.suggestions`]."""

from __future__ import annotations

from typing import Any

from .estimate import _estimate
from .seas import judge_model_id
from .settings import GIB, MemoryPlan, Suggestion
from .shapes import model_shapes


# Suggestions saving less than this (GiB) are left out, unless they make the plan fit
MIN_SAVING = 0.25


def _suggestions(plan: MemoryPlan, gpu_gb: float | None) -> list[Suggestion]:
    s, context = plan.settings, plan.context
    shapes = context["shapes"]

    def total(**changes) -> int:
        replanned = context
        if "judge" in changes:
            judge_id = judge_model_id(changes["judge"])
            replanned = dict(context, judge_id=judge_id, judge_shapes=model_shapes(judge_id) if judge_id else None)
        return _estimate(s.replace(**changes), replanned).total

    def fits(value: int) -> bool:
        return gpu_gb is not None and value <= gpu_gb * GIB

    def largest(name: str, floor: int, **changes) -> int:
        """The largest halving of setting `name` (down to `floor`) that fits with `changes`, else `floor`."""
        value = getattr(s, name) // 2
        while value > floor and not fits(total(**changes, **{name: value})):
            value //= 2
        return max(value, floor)

    if gpu_gb is not None and plan.fits(gpu_gb):
        best = s.micro_batch
        while best < 512 and fits(total(micro_batch=best * 2)):
            best *= 2
        if best == s.micro_batch:
            return []
        return [Suggestion(f"room for --micro-batch {best}", {"micro_batch": best}, total(micro_batch=best), True)]

    training = plan.phase != "attack"
    labels = {
        "gradient_checkpointing": "--gradient-checkpointing",
        "lora_dropout": "--lora-dropout 0 (no masked input copies)",
        "fused_lm_head": "the fused LM head (no label smoothing / custom loss)",
        "optim": "--optim paged_adamw_8bit",
        "experts_bf16": "4-bit experts (hf_safety.quant: drop --experts-bf16)",
        "lora_experts": "LoRA on attention only (--no-lora-experts)",
        "judge_quant": "the judge in 4-bit (--judge-quant nf4: judge=load_judge(..., load_in_4bit=True))",
        "judge": "a smaller judge (--judge llama-guard-3-1b)",
    }
    toggles: dict[str, Any] = {}  # cheap single-GPU changes, in this order
    if training and not s.gradient_checkpointing:
        toggles["gradient_checkpointing"] = True
    if training and s.lora_r > 0 and s.lora_dropout > 0:
        toggles["lora_dropout"] = 0.0
    if training and not s.fused_lm_head:
        toggles["fused_lm_head"] = True
    if training and s.optim not in ("paged_adamw_8bit", "adamw_bnb_8bit", "adamw_8bit", "sgd"):
        toggles["optim"] = "paged_adamw_8bit"
    if shapes.num_experts and s.experts_bf16:
        toggles["experts_bf16"] = False
    if shapes.num_experts and s.lora_experts and s.lora_r > 0:
        toggles["lora_experts"] = False
    if s.method == "seas" and context.get("judge_shapes") is not None:
        if s.judge_quant == "bf16":
            toggles["judge_quant"] = "nf4"
        if context.get("judge_id") != "meta-llama/Llama-Guard-3-1B":
            toggles["judge"] = "llama-guard-3-1b"

    out: list[Suggestion] = []

    def add(change: str, **changes) -> None:
        value = total(**changes)
        saving = plan.total - value
        if saving >= max(MIN_SAVING * GIB, 0.02 * plan.total) or (saving > 0 and fits(value)):
            out.append(Suggestion(change, changes, value, fits(value)))

    if training and s.micro_batch > 1:
        batch = largest("micro_batch", 1)
        add(
            f"--micro-batch {batch} (gradient accumulation x{s.micro_batch // batch} keeps the batch)",
            micro_batch=batch,
        )
    for name, value in toggles.items():
        add(labels[name], **{name: value})
    if training and s.seq_len > 512:
        seq_len = largest("seq_len", 512)
        add(f"--seq-len {seq_len} (longer rows truncated)", seq_len=seq_len)
    if s.quant == "bf16":
        add("--quant nf4 (QLoRA)", quant="nf4", lora_r=s.lora_r or 16)
    elif s.lora_r > 8:
        add("--lora-r 8", lora_r=8)
    if s.lora_r == 0:
        add("LoRA instead of full fine-tuning (--lora-r 16)", lora_r=16)
    if plan.phase == "attack":
        for name in ("generation_batch_size", "judge_batch_size"):
            if getattr(s, name) > 1:
                value = max(1, getattr(s, name) // 4)
                add(f"--{name.replace('_', '-')} {value}", **{name: value})
    for gpus in (2, 4, 8):
        if gpus > s.num_gpus:
            add(f"{gpus} GPUs with FSDP (--num-gpus {gpus})", num_gpus=gpus)
            if out and out[-1].settings == {"num_gpus": gpus} and out[-1].fits:
                break
    if gpu_gb is None or any(sug.fits and "num_gpus" not in sug.settings and len(sug.settings) == 1 for sug in out):
        return out
    # Nothing fits alone: the cheap changes, most effective first, then halve batches and sequences until it fits
    changes: dict[str, Any] = {}
    steps: list[str] = []

    def gain(**extra) -> int:
        return total(**changes) - total(**changes, **extra)

    remaining = dict(toggles)
    while remaining and not fits(total(**changes)):
        name, best = max(((name, gain(**{name: value})) for name, value in remaining.items()), key=lambda x: x[1])
        if best < MIN_SAVING * GIB:
            break
        changes[name] = remaining.pop(name)
        steps.append(labels[name])
    for name, floor in (("micro_batch", 1), ("generation_batch_size", 1), ("judge_batch_size", 1), ("seq_len", 512)):
        if fits(total(**changes)):
            break
        if getattr(s, name) > floor:
            value = largest(name, floor, **changes)
            if gain(**{name: value}) >= MIN_SAVING * GIB:
                changes[name] = value
                steps.append(f"--{name.replace('_', '-')} {value}")
    if len(changes) > 1:
        value = total(**changes)
        out.append(Suggestion("together: " + ", ".join(steps), changes, value, fits(value)))
    return out
