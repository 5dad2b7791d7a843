"""Quantization that bitsandbytes does not do by itself: the fused 3-D experts of transformers 5 MoE models in 4-bit."""

from .moe import (
    SplitExpert,
    SplitExperts,
    find_fused_experts,
    fuse_moe_experts,
    moe_experts_layout_error,
    quantize_moe_experts,
    resolve_all_linear,
    split_moe_experts,
)


__all__ = [
    "SplitExpert",
    "SplitExperts",
    "find_fused_experts",
    "fuse_moe_experts",
    "moe_experts_layout_error",
    "quantize_moe_experts",
    "resolve_all_linear",
    "split_moe_experts",
]
