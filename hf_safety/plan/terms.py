"""The per-term formulas of [`estimate_memory`]: weights, adapters, what autograd saves per block, the LM head, and
the plan of one trained model (gradients, optimizer, activations, workspace), sharded over GPUs and finished with
the CUDA context and the allocator margin."""

from __future__ import annotations

from typing import Any

from .settings import GIB, OPTIMIZER_STATE_BYTES, MemoryPlan, PlanSettings
from .shapes import LinearShape, ModelShapes


# Bytes per NF4-quantized weight (bitsandbytes, blocksize 64): 4 bits + one absmax per 64-block, fp32 (4 B), or with
# double quantization 8-bit (1 B) + one fp32 second-level absmax per 256 blocks: 4.5 vs 4.127 bits per parameter.
NF4_BYTES_PER_PARAM = {False: 0.5 + 4 / 64, True: 0.5 + 1 / 64 + 4 / (64 * 256)}
# Fused LM head of TRL 1.16 (`trl.trainer.utils.add_fused_lm_head` -> `_ChunkedLogProbFunction`): logits tiles of
# [TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE] in the compute dtype, never the full [tokens, vocab] logits
FUSED_HEAD_TOKEN_TILE = 4096
FUSED_HEAD_VOCAB_TILE = 32768


def _weights_bytes(shapes: ModelShapes, settings: PlanSettings, upcast_other: bool = False) -> tuple[int, str]:
    other_bytes = 4 if upcast_other else 2
    if settings.quant == "bf16":
        total = shapes.total_params * 2
        return total, f"{_count(shapes.total_params)} params in bf16"
    nf4 = NF4_BYTES_PER_PARAM[settings.double_quant]
    quantized = shapes.linear_params + (0 if settings.experts_bf16 else shapes.expert_params)
    sixteen = shapes.total_params - quantized
    other = shapes.other_params
    total = int(quantized * nf4 + (sixteen - other) * 2 + other * other_bytes)
    how = f"{_count(quantized)} in NF4 ({nf4:.3f} B/param)"
    if settings.experts_bf16 and shapes.expert_params:
        how += f" + {_count(shapes.expert_params)} experts in bf16"
    how += f" + {_count(other)} embeddings/head/norms in {'fp32' if upcast_other else 'bf16'}"
    return total, how


def _adapted_linears(shapes: ModelShapes, settings: PlanSettings) -> list[LinearShape]:
    if settings.lora_r == 0:
        return list(shapes.linears)
    lora_on_experts = settings.lora_experts and shapes.num_experts
    return [lin for lin in shapes.linears if not lin.expert or lora_on_experts]


def _adapter_params(shapes: ModelShapes, settings: PlanSettings) -> int:
    if settings.lora_r == 0:
        return shapes.total_params
    return sum(
        settings.lora_r * (lin.in_features + lin.out_features) * lin.count
        for lin in _adapted_linears(shapes, settings)
    )


def _adapter_dtype_bytes(settings: PlanSettings) -> int:
    return 2 if settings.quant == "nf4" or settings.lora_r == 0 else 4


def _block_saved_per_token(shapes: ModelShapes, settings: PlanSettings) -> float:
    """Bytes autograd saves per token for one block in training (see [`estimate_memory`])."""
    d, heads, head_dim = shapes.hidden_size, shapes.num_heads, shapes.head_dim
    q = heads * head_dim
    kv = 2 * q if settings.padded else 2 * shapes.num_kv_heads * head_dim
    saved = 2 * 4 * d + 2 * q + 2 * kv + 2 * q + 4 * heads
    moe = shapes.num_experts > 0
    routed = shapes.experts_per_token if moe else 1
    inter = shapes.intermediate_size
    saved += routed * 3 * 2 * inter if not moe else routed * (6 * inter + 2 * d)
    adapted = _adapted_linears(shapes, settings)
    separate = settings.lora_r > 0 and (settings.lora_dropout > 0 or _adapter_dtype_bytes(settings) == 4)
    if settings.lora_r == 0:  # trained norm weights keep their bf16 input too
        saved += 2 * 2 * d
    mask_bytes = 1 if settings.lora_dropout > 0 else 0
    by_group: dict[str, list[LinearShape]] = {}
    for lin in adapted:
        by_group.setdefault(lin.group + (":expert" if lin.expert else ""), []).append(lin)
    for group, lins in by_group.items():
        copies = routed if lins[0].expert else 1
        if settings.lora_r > 0 and separate:
            saved += copies * sum((2 + mask_bytes) * lin.in_features for lin in lins)
        elif group.startswith("attn_out"):
            continue  # its input is the SDPA output, already saved
        else:
            saved += copies * 2 * lins[0].in_features
    if settings.lora_r > 0:  # lora_A outputs, saved by lora_B: r per adapted linear a token goes through
        saved += sum(
            2 * settings.lora_r * (routed if lin.expert else lin.count // shapes.num_layers) for lin in adapted
        )
    return saved


def _block_forward_per_token(shapes: ModelShapes) -> float:
    """Transient bytes per token of one block's forward without grad (prefill, DPO reference): the larger of the
    attention side (fp32 norm copy, q/k/v, output) and the MLP side (residual, input, gate, up, product)."""
    d, q = shapes.hidden_size, shapes.num_heads * shapes.head_dim
    attention = 4 * d + 2 * d + 2 * q + 2 * 2 * shapes.num_kv_heads * shapes.head_dim + 2 * q
    if shapes.num_experts:  # experts run one at a time: one expert's share of the tokens (k/E, x2 for imbalance)
        share = min(1.0, 2 * shapes.experts_per_token / shapes.num_experts)
        mlp = 4 * d + 2 * d + 3 * 2 * shapes.intermediate_size * share
    else:
        mlp = 4 * d + 3 * 2 * shapes.intermediate_size
    return max(attention, mlp)


def _fused_head_bytes(shapes: ModelShapes, tokens: int, backward: bool = True) -> int:
    tile = min(tokens, FUSED_HEAD_TOKEN_TILE) * min(shapes.vocab_size, FUSED_HEAD_VOCAB_TILE) * 2
    per_token = 2 * shapes.hidden_size + 28 + ((4 + 2) * shapes.hidden_size if backward else 0)
    return tile + tokens * per_token


def _training_phase(
    settings: PlanSettings,
    context: dict[str, Any],
    phase: str,
    shapes: ModelShapes,
    seq_len: int,
    extra: dict[str, Any] | None,
    upcast_other: bool = False,
) -> MemoryPlan:
    """One model trained (weights, adapters, grads, optimizer, activations, head, workspace); `extra` adds SEAS's
    resident models."""
    s = settings
    plan = MemoryPlan(model=context["model"], method=s.method, phase=phase, settings=s, shapes=context["shapes"])
    plan.context = context
    how = plan.how
    weights, how["weights"] = _weights_bytes(shapes, s, upcast_other)
    plan.weights = weights
    trainable = _adapter_params(shapes, s)
    dtype_bytes = _adapter_dtype_bytes(s)
    dtype = {2: "bf16", 4: "fp32"}[dtype_bytes]
    if s.lora_r > 0:
        adapted = _adapted_linears(shapes, s)
        plan.adapters = trainable * dtype_bytes
        how["adapters"] = (
            f"{_count(trainable)} params (r {s.lora_r} on {len(adapted)} linear kinds x {shapes.num_layers} blocks), "
            + ("bf16: TRL casts a 4-bit model's adapters" if dtype_bytes == 2 else "fp32: PEFT autocast_adapter_dtype")
        )
    plan.gradients = trainable * dtype_bytes
    how["gradients"] = f"one per trainable param, {dtype}"
    state = OPTIMIZER_STATE_BYTES[s.optim]
    state_bytes = 2 * dtype_bytes if state is None else state
    plan.optimizer_states = int(trainable * state_bytes)
    how["optimizer_states"] = f"{s.optim}: {state_bytes:g} B per trainable param"
    # activations
    tokens = s.micro_batch * s.rows_to_sequences * seq_len
    per_block = _block_saved_per_token(shapes, s)
    backward = 4 * shapes.mlp_width + 4 * shapes.hidden_size
    resid = 4 if upcast_other else 2
    what = {"derta": "DeRTa sequences", "seas": "DPO chosen+rejected", "sft": "sequences"}[s.method]
    tokens_how = f"{tokens:,} tokens ({s.micro_batch} x {s.rows_to_sequences} {what} x {seq_len})"
    final_norm = 4 * shapes.hidden_size
    if s.gradient_checkpointing:
        plan.activations = int(
            tokens * (shapes.num_layers * resid * shapes.hidden_size + per_block + backward + final_norm)
        )
        how["activations"] = (
            f"{tokens_how}: {shapes.num_layers} block inputs x {resid * shapes.hidden_size / 1024:.0f} KiB + one "
            f"block recomputed {per_block / 1024:.0f} KiB + backward {backward / 1024:.0f} KiB per token"
        )
    else:
        plan.activations = int(tokens * (shapes.num_layers * per_block + backward + final_norm))
        how["activations"] = (
            f"{tokens_how}: {shapes.num_layers} blocks x {per_block / 1024:.0f} KiB + backward "
            f"{backward / 1024:.0f} KiB per token (no checkpointing)"
        )
    if s.fused_lm_head:
        plan.lm_head = _fused_head_bytes(shapes, tokens)
        how["lm_head"] = (
            f"TRL fused LM head: {min(tokens, FUSED_HEAD_TOKEN_TILE)} x "
            f"{min(shapes.vocab_size, FUSED_HEAD_VOCAB_TILE)} bf16 logits tile + (8d + 28) B per token"
        )
    else:
        plan.lm_head = tokens * shapes.vocab_size * 10
        how["lm_head"] = f"full logits: {tokens:,} x {shapes.vocab_size:,} x (2 bf16 + 4 fp32 + 4 fp32 log-softmax)"
    workspace, workspace_how = 0, []
    if s.quant == "nf4":
        workspace += shapes.largest_linear * 2
        workspace_how.append("one NF4 weight dequantized to bf16")
    if s.lora_r > 0 and s.lora_experts and shapes.num_experts and s.experts_bf16:
        layers = 2 if s.gradient_checkpointing else shapes.num_layers + 1
        workspace += layers * shapes.expert_layer_params * 2
        workspace_how.append(f"merged expert stacks W+BA (PEFT target_parameters) x {layers}")
        plan.notes.append(
            "bf16 experts with LoRA on them: PEFT materializes each block's merged expert weights; plan with 4-bit "
            "experts (hf_safety.quant) or --no-lora-experts"
        )
    if extra is not None and extra.get("reference_forward"):
        workspace += int(tokens * _block_forward_per_token(shapes)) + _fused_head_bytes(shapes, tokens, backward=False)
        workspace_how.append("the reference forward (no grad): one block + head tile")
    plan.workspace = workspace
    how["workspace"] = " + ".join(workspace_how)
    if extra:
        for key in ("reference_weights", "judge", "generation"):
            if extra.get(key):
                setattr(plan, key, extra[key][0])
                how[key] = extra[key][1]
        if extra.get("resident"):
            plan.weights += extra["resident"][0]
            how["weights"] = extra["resident"][1](how["weights"])
        if extra.get("resident_adapters"):
            plan.adapters += extra["resident_adapters"][0]
            how["adapters"] = how.get("adapters", "") + extra["resident_adapters"][1]
        if extra.get("resident_optimizer"):
            plan.optimizer_states += extra["resident_optimizer"][0]
            how["optimizer_states"] += extra["resident_optimizer"][1]
    if s.num_gpus > 1:
        _shard(plan, shapes, s)
    return plan


def _shard(plan: MemoryPlan, shapes: ModelShapes, s: PlanSettings) -> None:
    n = s.num_gpus
    block = plan.weights / max(shapes.num_layers, 1)
    for key in ("weights", "reference_weights", "adapters", "gradients", "optimizer_states"):
        setattr(plan, key, int(getattr(plan, key) / n))
    plan.weights += int(2 * block * (n - 1) / n)
    plan.how["weights"] += f"; FSDP over {n} GPUs: / {n} + 2 gathered blocks"
    plan.notes.append(
        f"FSDP FULL_SHARD over {n} GPUs (not verified on GPU; QLoRA needs bnb_4bit_quant_storage=bfloat16)"
    )


def _finish(plan: MemoryPlan, context: dict[str, Any]) -> MemoryPlan:
    plan.allocator = int(plan.peak_allocated * plan.settings.fragmentation)
    plan.how["allocator"] = f"{plan.settings.fragmentation:.0%} of the allocated peak (fragmentation)"
    plan.cuda_context = int(plan.settings.cuda_context_gib * GIB)
    plan.how["cuda_context"] = "CUDA context + cuBLAS/NCCL workspaces (outside torch's allocator)"
    return plan


def _count(n: int | float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))
