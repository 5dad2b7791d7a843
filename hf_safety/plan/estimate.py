"""[`estimate_memory`]: the peak GPU memory of a DeRTa, SEAS or SFT run, its formulas written down in its docstring."""

from __future__ import annotations

from typing import Any

from .seas import _seas_phases, judge_model_id
from .settings import MemoryPlan, PlanSettings
from .shapes import ModelShapes, PlanError, load_model_config, model_shapes
from .terms import _finish, _training_phase


def estimate_memory(config: Any, settings: PlanSettings | None = None, **kwargs) -> MemoryPlan:
    r"""
    Estimated peak GPU memory (per GPU) of a DeRTa, SEAS or SFT run of the model of `config` (anything
    [`load_model_config`] takes: a config, a folder, a config.json, a Hub id), with `settings` (a [`PlanSettings`],
    or its fields as keyword arguments).

    Notation: L blocks, d hidden size, I intermediate size (MoE: per expert, k experts per token, E experts), H
    attention heads, h head dim, Hkv KV heads, V vocabulary, r LoRA rank, N tokens per micro-batch. Sizes in bytes.

    - **weights**: counted exactly on the meta device ([`ModelShapes`]). NF4: quantizable linear weights at
      0.516 B/param with double quantization (4 bits + an 8-bit absmax per 64-block + an fp32 absmax per 256 blocks),
      0.5625 without; embeddings, LM head, norms and the MoE router stay bf16 (bitsandbytes skips the output
      embeddings). MoE experts: NF4 (hf_safety.quant's per-expert `Linear4bit`) unless `experts_bf16` (stock
      transformers 5: bitsandbytes leaves the fused 3-D experts in bf16). bf16: 2 B/param. SEAS's red team goes
      through `prepare_model_for_kbit_training`, which casts its non-quantized parameters to fp32 (4 B/param).
    - **adapters**: r·(in+out) per adapted linear (all linear layers of the blocks; MoE: attention + each expert,
      unless `lora_experts=False`). Storage dtype: bf16 when the base is 4-bit (TRL 1.16's SFT and DPO trainers cast
      the trainable parameters of a quantized model to bf16, since `autocast_adapter_dtype=False` is not supported
      for quantized models), fp32 for a bf16 base (PEFT's default `autocast_adapter_dtype=True`; TRL passes False
      only under ZeRO-3). Full fine-tuning (r = 0): the weights themselves, bf16.
    - **gradients**: one per trainable parameter, in its dtype. **optimizer states**: [`OPTIMIZER_STATE_BYTES`].
    - **activations**, N = micro_batch x sequences per row x seq_len (DeRTa: 2 sequences per harmful row, the
      collator emits both into the same batch; the worst case assumed: every row harmful and as long as seq_len.
      DPO: chosen + rejected. SFT: 1). Per block and token, what autograd saves (counted on CPU in tiny models,
      `tests/test_plan.py`): 2 x 4d (each RMSNorm keeps its fp32 input), 2·H·h (q after RoPE), 2 x 2·H·h (k, v:
      SDPA gets them repeated to H heads when a padding mask is present, else 2 x 2·Hkv·h), 2·H·h + 4·H (SDPA output
      + logsumexp), 3 x 2I (gate, SiLU(gate), up), plus the inputs of the trained linears: without dropout one 2-byte
      copy per shared input (the attention input for q/k/v, the MLP input for gate/up, 2I for down; the o_proj input
      is the SDPA output itself), with dropout (or fp32 adapters) a 2-byte copy and a 1-byte mask per adapted linear
      (34d + 9I instead of 20d + 8I for Llama). MoE: the MLP terms per routed copy (k per token): 6I + 2d (gate_up
      output, SiLU, the routing-weight product) + the adapted experts' inputs. With gradient checkpointing: the
      block inputs (L x 2d per token, 4d when the residual stream is fp32) + one block recomputed + the backward
      transients of that block (~4I + 4d per token: gradients of the MLP intermediates and of the hidden states; an
      estimate). Without: L blocks' worth + the backward transients. Flash/memory-efficient SDPA: no seq² term.
      This replaces Korthikanti et al.'s 34·d + 5·a·s per token and layer (GPT blocks, I = 4d, eager attention),
      which does not fit Llama's SwiGLU, GQA and RMSNorm.
    - **LM head + loss**: TRL's fused LM head (DeRTaTrainer, SFTTrainer and DPOTrainer all call the model with
      `fused_lm_head=True`) never builds the [N, V] logits: a [min(N, 4096), min(V, 32768)] bf16 tile, the gathered
      hidden states (2d per labelled token), their fp32 gradient (4d) and its bf16 cast (2d), fp32 statistics (28 B).
      Without it (`fused_lm_head=False`: label smoothing, a custom loss): bf16 logits + their fp32 upcast + the fp32
      log-softmax = 10·N·V. The sum with the block's backward is conservative: under checkpointing the two do not
      coexist.
    - **workspace**: NF4 dequantizes one weight to bf16 per matmul (the largest one); MoE with bf16 fused experts
      and LoRA on them (PEFT `target_parameters`): the merged expert stack W + BA of a block is materialized and
      saved for backward (plus its gradient): 2 x one block's experts with checkpointing, L x without.
    - **SEAS**: red team and target resident (weights + "default" and "ref" adapters, the "ref" one fp32 as PEFT's
      `add_adapter` leaves it; full fine-tuning: a frozen reference copy of each), the target's optimizer state kept
      between rounds, the judge resident from the start (the trainer loads it at init) in `judge_quant`. Phases:
      *attack* (red team generation: generation_batch_size x n sequences of red_team_prompt_tokens +
      red_team_max_new_tokens; target generation: x m sequences of red_team_max_new_tokens + 64 (chat template) +
      target_max_new_tokens; judge: judge_batch_size x (judge_prompt_tokens + prompt + answer + 64); each: KV cache
      2·L·Hkv·h·2 B per token + the prefill transients of one block + sampling over V in fp32), *red team DPO*
      (seq len = its prompt + adversarial prompt) and *target DPO* (seq_len), each with the reference forward (PEFT:
      adapters switched, no grad: one block's forward transients). The peak is the max over phases.
    - **num_gpus** > 1: FSDP FULL_SHARD divides weights, adapters, gradients and optimizer states by the GPU count
      and adds two gathered blocks (the current and the prefetched one); activations are per GPU. Not verified.
    - **CUDA context** (`cuda_context_gib`, default 1 GiB: context, cuBLAS/cuDNN/NCCL workspaces; not seen by
      torch's allocator) and **allocator margin** (`fragmentation`, default 5% of the allocated peak).
    """
    if settings is None:
        settings = PlanSettings(**kwargs)
    elif kwargs:
        settings = settings.replace(**kwargs)
    config_obj, source = load_model_config(config)
    name = str(config) if not hasattr(config, "to_dict") else getattr(config, "_name_or_path", "") or "config"
    context = {"model": name, "source": source, "shapes": model_shapes(config_obj)}
    if settings.method == "seas":
        context["red_team"] = context["shapes"]
        if settings.red_team_model:
            context["red_team"] = _shapes_of(settings.red_team_model, "the red team model (--red-team-model)")
        judge_id = judge_model_id(settings.judge)
        context["judge_id"] = judge_id
        context["judge_shapes"] = _shapes_of(judge_id, f"the judge {settings.judge!r} (--judge)") if judge_id else None
    return _estimate(settings, context)


def _shapes_of(model: str, what: str) -> ModelShapes:
    try:
        return model_shapes(model)
    except PlanError as err:
        raise PlanError(f"{what}: {err}") from err


def _estimate(settings: PlanSettings, context: dict[str, Any]) -> MemoryPlan:
    if settings.method != "seas":
        plan = _training_phase(settings, context, "training", context["shapes"], settings.seq_len, extra=None)
        return _finish(plan, context)
    phases = {name: _finish(plan, context) for name, plan in _seas_phases(settings, context).items()}
    peak = max(phases.values(), key=lambda plan: plan.total)
    peak.phases = phases
    return peak
