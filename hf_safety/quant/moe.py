r"""
The fused experts of transformers 5 MoE models in bitsandbytes 4-bit.

transformers 5 stores the experts of Mixtral, Qwen2/Qwen3-MoE, OLMoE, DeepSeek-V2/V3, PhiMoE, Jamba, ... as one
module per layer holding two 3-D parameters, `gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I]. bitsandbytes
only replaces `nn.Linear`, so `load_in_4bit=True` leaves them in 16/32-bit (≈ 90 GB for Mixtral-8x7B).
[`quantize_moe_experts`] swaps each such module for a [`SplitExperts`]: the same forward signature
`(hidden_states, top_k_index, top_k_weights)` and math, with each expert's two projections as
`bitsandbytes.nn.Linear4bit`:

    model.layers.N.mlp.experts.{i}.gate_up    Linear4bit(H -> 2I)   rows [gate; up], as in the fused tensor
    model.layers.N.mlp.experts.{i}.down       Linear4bit(I -> H)

PEFT targets them with `target_modules=["gate_up", "down", ...]` or a regex such as
`r".*\.experts\.\d+\.(gate_up|down)"`. The names differ from `gate_up_proj`/`down_proj` on purpose: PEFT (0.21)
rewrites those names (and the v4 names `w1`/`w2`/`w3`, `gate_proj`/`up_proj`) into `target_parameters` of the fused
layout for Mixtral- and Qwen-MoE-family models, which would miss these layers. For the same v4-parity reason PEFT
expands `target_modules="all-linear"` on those models to the router's weight too (`mlp.gate`, which stays in full
precision here); [`resolve_all_linear`] lists the linear layers instead, so LoRA lands on attention and experts only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


logger = logging.getLogger(__name__)

# The `@use_experts_implementation` flags of the layout this module reproduces (transformers' defaults)
_SUPPORTED_FLAGS = {
    "has_gate": True,
    "has_bias": False,
    "is_transposed": False,
    "is_concatenated": True,
    "has_post_expert_norm": False,
}
_EXPERT_PARAMETER_NAMES = ("gate_up_proj", "up_proj", "down_proj")


def _default_apply_gate():
    try:
        from transformers.integrations.moe import _default_apply_gate as apply_gate
    except ImportError:  # another transformers layout: a custom gate cannot be told apart, so every class is refused
        return None
    return apply_gate


def find_fused_experts(model: nn.Module) -> list[str]:
    """Names of the fused-expert modules of `model`: modules holding a 3-D `gate_up_proj`, `up_proj` or `down_proj`
    parameter (first dimension: the experts), whether [`quantize_moe_experts`] supports their layout or not."""
    return [
        name
        for name, module in model.named_modules()
        if any(
            param.dim() == 3 for key, param in module.named_parameters(recurse=False) if key in _EXPERT_PARAMETER_NAMES
        )
    ]


def moe_experts_layout_error(module: nn.Module) -> str | None:
    """
    Why the fused-expert `module` cannot be converted by [`quantize_moe_experts`], or `None` when it can.

    Supported: a transformers `@use_experts_implementation` module with the default flags and gate (the Mixtral
    layout: exactly `gate_up_proj` [E, 2I, H] with rows [gate; up], and `down_proj` [E, H, I], no bias, no
    post-expert norm, `act_fn(gate) * up`). In transformers 5.24 that is 55 classes, among them `MixtralExperts`,
    `Qwen2MoeExperts`, `Qwen3MoeExperts`, `OlmoeExperts`, `PhimoeExperts`, `DeepseekV2Experts`,
    `DeepseekV3Experts`, `JambaExperts`, `GraniteMoeExperts`, `Glm4MoeExperts`, `MiniMaxExperts` (their eager
    forwards are the same source as Mixtral's). Refused: e.g. `GptOssExperts` (transposed, interleaved, bias),
    `AriaExperts` (transposed), `NemotronHExperts` (no gate), `DeepseekV4Experts` (custom gate), `MuseSparkExperts`
    (post-expert norm), and experts classes from remote code.
    """
    params = dict(module.named_parameters(recurse=False))
    if set(params) != {"gate_up_proj", "down_proj"}:
        return f"parameters {sorted(params)} (supported: exactly `gate_up_proj` and `down_proj`)"
    gate_up, down = params["gate_up_proj"], params["down_proj"]
    if gate_up.dim() != 3 or down.dim() != 3:
        return f"parameter shapes {tuple(gate_up.shape)} and {tuple(down.shape)} (supported: 3-D)"
    num_experts, two_inter, hidden = gate_up.shape
    if two_inter % 2 or tuple(down.shape) != (num_experts, hidden, two_inter // 2):
        return (
            f"`gate_up_proj` {tuple(gate_up.shape)} and `down_proj` {tuple(down.shape)} (supported: [E, 2I, H] and "
            "[E, H, I])"
        )
    if getattr(module, "num_experts", num_experts) != num_experts:
        return f"`num_experts`={module.num_experts} but the weights hold {num_experts} experts"
    if not hasattr(module, "is_transposed"):
        return "not a transformers `@use_experts_implementation` experts module, so its forward is unknown"
    for flag, value in _SUPPORTED_FLAGS.items():
        if getattr(module, flag, value) != value:
            return f"`{flag}={getattr(module, flag)}` (supported: {value})"
    default_gate = _default_apply_gate()
    if default_gate is None or getattr(type(module), "_apply_gate", default_gate) is not default_gate:
        return "a custom `_apply_gate` (supported: `act_fn(gate) * up`)"
    if not callable(getattr(module, "act_fn", None)):
        return "no `act_fn`"
    return None


def _linear4bit(weight: torch.Tensor, device: torch.device, **quant: Any) -> nn.Module:
    """A bias-free `Linear4bit` holding `weight` [out, in] quantized on `device` (a slice is copied there alone)."""
    import bitsandbytes as bnb

    out_features, in_features = weight.shape
    layer = bnb.nn.Linear4bit(
        in_features,
        out_features,
        bias=False,
        compute_dtype=quant["compute_dtype"],
        compress_statistics=quant["double_quant"],
        quant_type=quant["quant_type"],
        quant_storage=quant["quant_storage"],
        device="meta",
    )
    layer.weight = bnb.nn.Params4bit(
        weight,
        requires_grad=False,
        compress_statistics=quant["double_quant"],
        quant_type=quant["quant_type"],
        quant_storage=quant["quant_storage"],
        module=layer,
    ).to(device)  # `Params4bit.to` quantizes (bitsandbytes >= 0.49 also on CPU)
    return layer


def _linear(weight: torch.Tensor, device: torch.device) -> nn.Module:
    """A bias-free `nn.Linear` holding a copy of `weight` [out, in] on `device`."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta", dtype=weight.dtype)
    layer.weight = nn.Parameter(weight.to(device, copy=True))
    return layer


def _dense_weight(layer: nn.Module) -> torch.Tensor:
    """The full-precision weight of a `Linear4bit` (dequantized) or of an `nn.Linear`."""
    weight = layer.weight
    if type(weight).__name__ != "Params4bit":
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"cannot fuse a {type(layer).__name__}: merge or unload the PEFT adapter first")
        return weight.data
    import bitsandbytes as bnb

    if getattr(weight.quant_state, "packing_format_for_cpu", False):  # repacked by a CPU inference forward
        weight.data, weight.quant_state = bnb.functional._convert_weight_packed_for_cpu_inverse(
            weight.data, weight.quant_state
        )
    return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)


class SplitExpert(nn.Module):
    """One expert of a [`SplitExperts`]: `gate_up` (H -> 2I, rows [gate; up]) and `down` (I -> H)."""

    def __init__(self, gate_up: nn.Module, down: nn.Module):
        super().__init__()
        self.gate_up = gate_up
        self.down = down


class SplitExperts(nn.Module):
    """
    Drop-in for a transformers 5 fused-experts module (e.g. `MixtralExperts`) with one linear layer per expert and
    projection, named `{i}.gate_up` and `{i}.down`: `bitsandbytes.nn.Linear4bit` after [`quantize_moe_experts`],
    `nn.Linear` after [`split_moe_experts`]. Same forward signature and math as the eager forward of the module it
    replaces (one matmul pair per expert that has tokens); [`fuse_moe_experts`] turns it back into that module.
    """

    def __init__(self, experts: list[SplitExpert], act_fn: nn.Module, source: nn.Module | None = None):
        super().__init__()
        self.num_experts = len(experts)
        self.act_fn = act_fn
        for index, expert in enumerate(experts):
            self.add_module(str(index), expert)
        # the module it replaced, without its weights (not a submodule): what `to_fused` refills
        object.__setattr__(self, "_source", source)

    def __len__(self) -> int:
        return self.num_experts

    def __getitem__(self, index: int) -> SplitExpert:
        return self._modules[str(index)]

    def __iter__(self):
        return (self[index] for index in range(self.num_experts))

    @classmethod
    def from_fused(cls, module: nn.Module, make_linear: Callable[[torch.Tensor], nn.Module]) -> SplitExperts:
        """Splits a supported fused-expert `module`: `make_linear(weight)` builds each expert's layer from its [out,
        in] slice, one at a time; the module's 3-D weights are then dropped (freed unless referenced elsewhere)."""
        error = moe_experts_layout_error(module)
        if error is not None:
            raise ValueError(f"cannot split {type(module).__name__}: {error}")
        gate_up, down = module.gate_up_proj, module.down_proj
        if gate_up.device.type == "meta":
            raise ValueError("the experts' weights are on the meta device: load them first")
        experts = [
            SplitExpert(make_linear(gate_up.data[i]), make_linear(down.data[i])) for i in range(gate_up.shape[0])
        ]
        module._fused_dtype = gate_up.dtype
        del module._parameters["gate_up_proj"], module._parameters["down_proj"], gate_up, down
        return cls(experts, module.act_fn, source=module)

    def to_fused(self, dtype: torch.dtype | None = None) -> nn.Module:
        """The replaced module with its fused 3-D weights rebuilt from the (dequantized) experts, in `dtype`
        (default: their dtype before the split)."""
        source = self._source
        if source is None:
            raise ValueError("this SplitExperts was not built from a fused module: nothing to fuse back into")
        dtype = dtype or getattr(source, "_fused_dtype", None)
        source.gate_up_proj = nn.Parameter(torch.stack([_dense_weight(expert.gate_up) for expert in self]).to(dtype))
        source.down_proj = nn.Parameter(torch.stack([_dense_weight(expert.down) for expert in self]).to(dtype))
        return source

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        final_hidden_states = torch.zeros_like(hidden_states)
        with torch.no_grad():
            # one extra class so that the expert-parallel sentinel index `num_experts` is skipped, as upstream
            expert_mask = nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist()
        for expert_idx in expert_hit:
            if expert_idx == self.num_experts:
                continue
            expert = self[expert_idx]
            top_k_pos, token_idx = torch.where(expert_mask[expert_idx])
            gate, up = expert.gate_up(hidden_states[token_idx]).chunk(2, dim=-1)
            current_hidden_states = expert.down(self.act_fn(gate) * up)
            current_hidden_states = current_hidden_states * top_k_weights[token_idx, top_k_pos, None]
            final_hidden_states.index_add_(0, token_idx, current_hidden_states.to(final_hidden_states.dtype))
        return final_hidden_states

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}"


def _split_all(model: nn.Module, make_linear: Callable[[torch.Tensor], nn.Module], strict: bool) -> int:
    """Replaces each supported fused-expert module of `model` by a [`SplitExperts`], one module at a time."""
    names = find_fused_experts(model)
    errors = {name: error for name in names if (error := moe_experts_layout_error(model.get_submodule(name)))}
    if errors:
        listing = "; ".join(f"{name} ({type(model.get_submodule(name)).__name__}): {e}" for name, e in errors.items())
        message = f"fused-expert modules with an unsupported layout: {listing}"
        if strict:
            raise ValueError(message)
        logger.warning("%s; they stay as they are", message)
    count = 0
    for name in names:
        if name not in errors:  # look the module up by name, so that no list keeps the replaced weights alive
            new = SplitExperts.from_fused(model.get_submodule(name), make_linear)
            model.set_submodule(name, new)
            count += new.num_experts
    return count


def quantize_moe_experts(
    model: nn.Module,
    *,
    compute_dtype: torch.dtype = torch.bfloat16,
    quant_type: str = "nf4",
    double_quant: bool = True,
    quant_storage: torch.dtype = torch.uint8,
    device: torch.device | str | int | None = None,
    strict: bool = True,
) -> int:
    """
    Replaces every fused-expert module of `model` (see [`find_fused_experts`]) by a [`SplitExperts`] of
    bitsandbytes 4-bit layers, layer by layer: a layer's 16/32-bit expert weights are freed as soon as it is
    converted, so the extra memory is about one layer's experts. Works on a model loaded in full precision and on one
    loaded with `BitsAndBytesConfig(load_in_4bit=True)` (whose attention is already `Linear4bit`).

    ```python
    >>> model = MixtralForCausalLM.from_pretrained(path, quantization_config=bnb_4bit_config(), device_map="cpu")
    >>> quantize_moe_experts(model, compute_dtype=torch.float32)  # Mixtral-8x7B: 32 layers x 8 experts
    256
    ```

    Args:
        model (`nn.Module`): the model, converted in place.
        compute_dtype (`torch.dtype`, defaults to `torch.bfloat16`): compute dtype of the 4-bit layers.
        quant_type (`str`, defaults to `"nf4"`): `"nf4"` or `"fp4"`.
        double_quant (`bool`, defaults to `True`): also quantize the quantization constants (QLoRA).
        quant_storage (`torch.dtype`, defaults to `torch.uint8`): storage dtype of the packed weights (bfloat16 for
            FSDP-QLoRA).
        device (optional): where to quantize and keep the experts; default: where their weights are. With CPU
            weights and a CUDA `device`, each expert is copied to the GPU alone and quantized there.
        strict (`bool`, defaults to `True`): raise `ValueError` on a fused-expert module whose layout is not
            supported (see [`moe_experts_layout_error`]); with `False`, warn and leave it as it is.

    Returns:
        `int`: the number of experts quantized (0 for a model without fused experts). When > 0, `model` is flagged
        `is_loaded_in_4bit` (as after a bitsandbytes 4-bit load), which PEFT and TRL read.
    """
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ImportError("quantizing MoE experts needs bitsandbytes: pip install 'hf-safety[qlora]'") from err
    quant = dict(
        compute_dtype=compute_dtype, quant_type=quant_type, double_quant=double_quant, quant_storage=quant_storage
    )

    def make_linear(weight: torch.Tensor) -> nn.Module:
        return _linear4bit(weight, weight.device if device is None else torch.device(device), **quant)

    count = _split_all(model, make_linear, strict)
    if count:
        model.is_loaded_in_4bit = True  # what PEFT reads to wrap `Linear4bit` with its 4-bit LoRA layer (merging)
    return count


def split_moe_experts(model: nn.Module, *, strict: bool = True) -> int:
    """
    Like [`quantize_moe_experts`] without the quantization: each expert becomes two `nn.Linear` (copies, same dtype
    and device), under the same names. The way to load a LoRA adapter trained on 4-bit experts into a 16-bit base and
    merge it exactly: `split_moe_experts(base)`, `PeftModel.from_pretrained(base, adapter).merge_and_unload()`, then
    [`fuse_moe_experts`] and `save_pretrained`. Returns the number of experts split.
    """
    return _split_all(model, lambda weight: _linear(weight, weight.device), strict)


def fuse_moe_experts(model: nn.Module, dtype: torch.dtype | None = None) -> int:
    """
    The inverse of [`quantize_moe_experts`] and [`split_moe_experts`]: every [`SplitExperts`] of `model` goes back to
    its original module with fused 3-D weights, dequantized if 4-bit, in `dtype` (default: their dtype before the
    split). Use it after merging a LoRA adapter (`peft_model.merge_and_unload()`) to get the checkpoint layout
    transformers saves and loads (merged into 4-bit experts, the weights carry NF4 rounding). Returns the number of
    modules fused back.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, SplitExperts)]
    for name in names:
        model.set_submodule(name, model.get_submodule(name).to_fused(dtype))
    return len(names)


def resolve_all_linear(peft_config: Any, model: nn.Module) -> Any:
    """
    For a model with [`SplitExperts`] modules and a PEFT config with `target_modules="all-linear"`: a copy of the config
    whose `target_modules` are the full names of the model's linear layers but the output head (attention, dense MLPs,
    the 4-bit experts). PEFT (0.21) would otherwise add the router (`target_parameters=["gate.weight", ...]`) on
    Mixtral- and Qwen-MoE-family models. Any other config is returned as it is.
    """
    target = getattr(peft_config, "target_modules", None)
    if not (isinstance(target, str) and target.lower() == "all-linear"):
        return peft_config
    if not any(isinstance(module, SplitExperts) for module in model.modules()):
        return peft_config
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and module is not head]
    return dataclasses.replace(peft_config, target_modules=names)
