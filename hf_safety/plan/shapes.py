"""The model side of a plan: its config, found without downloading weights (local, shipped in `recipes/configs/`,
shape twins, the Hub), and its parameter shapes, counted on the meta device."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# Activation-saving groups of the linear layers of a block: linears of one group read the same input tensor
_INPUT_GROUPS = {
    "attn_in": ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "W_pack", "c_attn", "Wqkv"),
    "attn_out": ("o_proj", "out_proj", "dense", "c_proj_attn", "wo"),
    "mlp_in": ("gate_proj", "up_proj", "gate_up_proj", "gate_up", "w1", "w3", "fc1", "c_fc"),
    "mlp_act": ("down_proj", "down", "w2", "fc2", "c_proj"),
}
# Hub ids whose parameter shapes are those of a shipped config (same architecture and sizes), or given here from
# their published config.json: the judges SEAS can load, and the base models of the shipped instruct models
_SHAPE_TWINS: dict[str, str | dict[str, Any]] = {
    "meta-llama/Llama-Guard-3-8B": "meta-llama/Meta-Llama-3-8B-Instruct",  # Llama-3.1-8B: same shapes
    "meta-llama/Meta-Llama-Guard-2-8B": "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Meta-Llama-3-8B": "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Llama-3.1-8B": "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Meta-Llama-3-70B": "meta-llama/Meta-Llama-3-70B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct": "meta-llama/Meta-Llama-3-70B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct": "meta-llama/Meta-Llama-3-70B-Instruct",
    "mistralai/Mistral-7B-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
    "allenai/wildguard": "mistralai/Mistral-7B-Instruct-v0.3",  # a Mistral-7B-v0.3 fine-tune
    "cais/HarmBench-Mistral-7b-val-cls": "mistralai/Mistral-7B-Instruct-v0.3",  # v0.1: vocab 32000, not 32768
    "mistralai/Mixtral-8x7B-v0.1": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "meta-llama/Llama-Guard-3-1B": {  # Llama-3.2-1B shapes
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
    },
    # ShieldGemma: Gemma 2 2B / 9B / 27B shapes
    "google/shieldgemma-2b": {
        "model_type": "gemma2",
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 256000,
    },
    "google/shieldgemma-9b": {
        "model_type": "gemma2",
        "hidden_size": 3584,
        "intermediate_size": 14336,
        "num_hidden_layers": 42,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "vocab_size": 256000,
    },
    "google/shieldgemma-27b": {
        "model_type": "gemma2",
        "hidden_size": 4608,
        "intermediate_size": 36864,
        "num_hidden_layers": 46,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 128,
        "vocab_size": 256000,
    },
    "qylu4156/strongreject-15k-v1": {  # StrongREJECT's evaluator, fine-tuned from Gemma 2B (Gemma 1)
        "model_type": "gemma",
        "hidden_size": 2048,
        "intermediate_size": 16384,
        "num_hidden_layers": 18,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "vocab_size": 256000,
    },
    "cais/HarmBench-Llama-2-13b-cls": {  # Llama-2-13B shapes
        "model_type": "llama",
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "vocab_size": 32000,
        "tie_word_embeddings": False,
    },
}


class PlanError(ValueError):
    """Bad input to the planner (model config not found, unknown architecture, invalid setting): says how to fix it."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def shipped_configs_dir() -> Path:
    """`recipes/configs/` of this checkout (or of the working directory when the package is installed elsewhere)."""
    for root in (_repo_root(), Path.cwd()):
        folder = root / "recipes" / "configs"
        if folder.is_dir():
            return folder
    return _repo_root() / "recipes" / "configs"


def shipped_configs() -> dict[str, Path]:
    """Hub id -> `config.json` of the configs shipped in `recipes/configs/` (folder name: the id with `/` as `--`)."""
    folder = shipped_configs_dir()
    if not folder.is_dir():
        return {}
    return {
        path.name.replace("--", "/"): path / "config.json"
        for path in sorted(folder.iterdir())
        if (path / "config.json").is_file()
    }


def _config_not_found(name: str, why: str) -> PlanError:
    shipped = "\n".join(f"  {hub_id}" for hub_id in shipped_configs()) or "  (none found: recipes/configs/ is missing)"
    return PlanError(
        f"model config of {name!r} not found: {why.rstrip('.')}.\nPass a local model folder or config.json, a Hub "
        "id that is in the Hub cache (or go online: unset HF_HUB_OFFLINE), or one of the shipped configs (resolved "
        f"offline):\n{shipped}\nA private or fine-tuned model: pass the Hub id of its base model (--model, "
        "--red-team-model), the shapes are the same."
    )


def _config_from_dict(values: dict[str, Any], source: str):
    from transformers import AutoConfig

    values = dict(values)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise PlanError(f"{source} has no `model_type`: not a transformers config.json")
    try:
        return AutoConfig.for_model(model_type, **values)
    except (KeyError, ValueError) as err:
        raise _unknown_model_type(model_type, source) from err


def _unknown_model_type(model_type: str, source: str) -> PlanError:
    import transformers

    return PlanError(
        f"unknown model type {model_type!r} in {source}: transformers {transformers.__version__} does not know it "
        "(upgrade transformers, or plan with a config of a supported architecture of the same sizes, e.g. one of "
        f"the shipped configs: {', '.join(shipped_configs())})"
    )


def _display_path(path: Path) -> str:
    """`path` relative to the working directory or the checkout when it is inside one of them."""
    resolved = path.resolve()
    for root in (Path.cwd(), _repo_root()):
        if resolved.is_relative_to(root):
            return str(resolved.relative_to(root))
    return str(path)


def load_model_config(model: Any) -> tuple[Any, str]:
    """
    The `PretrainedConfig` of `model` and where it came from, without downloading weights.

    `model` is a config object, a local folder holding `config.json`, a `config.json` file, a registered name
    (`toy://...`), a Hub id of a shipped config (resolved offline, case-insensitive), a Hub id of the same shapes as
    a shipped config (the judges, the base models), or any Hub id `AutoConfig.from_pretrained` can read (the cache,
    or the Hub when online).

    Raises:
        [`PlanError`]: the config cannot be found (the message lists the shipped configs), or names an unknown
            `model_type`.
    """
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, PretrainedConfig):
        return model, "config object"
    name = str(model)
    path = Path(name).expanduser()
    if path.is_file():
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PlanError(f"{path} is not a readable JSON config: {err}") from err
        return _config_from_dict(values, str(path)), _display_path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PlanError(f"folder {path} has no config.json (a model folder saved by save_pretrained has one)")
        return load_model_config(path / "config.json")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", name):
        from ..models import resolve_model_name

        resolved = resolve_model_name(name)
        if resolved != name:
            return load_model_config(resolved)
    shipped = {hub_id.lower(): config for hub_id, config in shipped_configs().items()}
    if name.lower() in shipped:
        return load_model_config(shipped[name.lower()])
    twins = {hub_id.lower(): twin for hub_id, twin in _SHAPE_TWINS.items()}
    twin = twins.get(name.lower())
    if isinstance(twin, dict):
        return _config_from_dict(twin, f"{name} (shapes from its published config)"), f"{name} (built-in shapes)"
    if twin is not None and twin.lower() in shipped:
        config, source = load_model_config(shipped[twin.lower()])
        return config, f"{source} (same shapes as {name})"
    from ..models import looks_like_local_path

    if looks_like_local_path(name):
        raise _config_not_found(name, f"no such file or folder {str(path)!r}")
    try:
        config = AutoConfig.from_pretrained(name)
    except ValueError as err:
        match = re.search(r"model type `?([\w-]+)`?", str(err))
        if match and ("Unrecognized" in str(err) or "does not recognize this architecture" in str(err)):
            raise _unknown_model_type(match.group(1) if match else "?", name) from err
        raise _config_not_found(name, str(err).splitlines()[0]) from err
    except OSError as err:
        raise _config_not_found(name, str(err).splitlines()[0]) from err
    return config, f"{name} (AutoConfig)"


@dataclass(frozen=True)
class LinearShape:
    """One linear layer of a transformer block: `count` of them in the model (blocks x experts)."""

    name: str
    in_features: int
    out_features: int
    count: int
    group: str
    expert: bool = False

    @property
    def params(self) -> int:
        return self.in_features * self.out_features * self.count


@dataclass(frozen=True)
class ModelShapes:
    """
    The parameter counts and sizes of a causal LM, from its config (built on the meta device, no weights).

    Parameters are sorted as bitsandbytes quantizes them (`replace_with_bnb_linear`: modules whose type is exactly
    `nn.Linear`, except the output embeddings): `linear_params` (quantizable), `expert_params` (the fused 3-D expert
    weights of transformers 5 MoE models, which bitsandbytes leaves alone; `hf_safety.quant` turns them into
    per-expert `Linear4bit`) and `other_params` (embeddings, LM head, norms, router, biases: 16-bit).
    """

    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    num_experts: int
    experts_per_token: int
    total_params: int
    linear_params: int
    expert_params: int
    other_params: int
    largest_linear: int
    linears: tuple[LinearShape, ...]

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache per token in bf16: 2 (K and V) x layers x KV heads x head dim x 2 bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 2

    @property
    def expert_layer_params(self) -> int:
        return self.expert_params // max(self.num_layers, 1)

    @property
    def mlp_width(self) -> int:
        """Intermediate activations per token of a block's MLP: I (dense) or top-k x I (MoE, per routed copy)."""
        return self.intermediate_size * (self.experts_per_token if self.num_experts else 1)


def _group_of(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    for group, leaves in _INPUT_GROUPS.items():
        if leaf in leaves:
            return group
    return f"own:{name}"  # unknown layer: its own input (conservative)


@functools.lru_cache(maxsize=32)
def _shapes_from_json(config_json: str) -> ModelShapes:
    import torch
    from torch import nn
    from transformers import AutoConfig

    from ..models import meta_model

    values = json.loads(config_json)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    text = config.get_text_config()
    try:
        model = meta_model(config, dtype=torch.bfloat16)
    except ValueError as err:
        raise PlanError(
            f"{config.model_type!r} is not a causal LM architecture transformers can build: {err}"
        ) from err
    output_embeddings = model.get_output_embeddings()
    seen: set[int] = set()
    linear = expert = other = largest = 0
    per_layer: dict[tuple[str, int, int, bool], int] = {}
    layer_pattern = re.compile(r"\.(\d+)\.")
    for module_name, module in model.named_modules():
        is_linear = type(module) is nn.Linear and module is not output_embeddings
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # tied weights count once
                continue
            seen.add(id(param))
            numel = param.numel()
            if is_linear and param_name == "weight":
                linear += numel
                largest = max(largest, numel)
                key = (layer_pattern.sub(".N.", f".{module_name}."), module.in_features, module.out_features, False)
            elif param.dim() == 3:  # fused experts [E, out, in] (transformers 5 layout, `is_transposed=False`)
                expert += numel
                largest = max(largest, numel // param.shape[0])
                key = (layer_pattern.sub(".N.", f".{module_name}.{param_name}."), param.shape[2], param.shape[1], True)
                per_layer[key] = per_layer.get(key, 0) + param.shape[0]
                continue
            else:
                other += numel
                continue
            per_layer[key] = per_layer.get(key, 0) + 1
    linears = tuple(
        LinearShape(name.strip("."), fan_in, fan_out, count, _group_of(name.strip(".")), is_expert)
        for (name, fan_in, fan_out, is_expert), count in per_layer.items()
    )
    num_heads = text.num_attention_heads
    num_experts = getattr(text, "num_local_experts", None) or getattr(text, "num_experts", None) or 0
    intermediate = getattr(text, "moe_intermediate_size", None) if num_experts else None
    return ModelShapes(
        model_type=text.model_type,
        num_layers=text.num_hidden_layers,
        hidden_size=text.hidden_size,
        intermediate_size=intermediate or text.intermediate_size,
        num_heads=num_heads,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or num_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // num_heads,
        vocab_size=text.vocab_size,
        num_experts=num_experts,
        experts_per_token=getattr(text, "num_experts_per_tok", 0) or 0,
        total_params=linear + expert + other,
        linear_params=linear,
        expert_params=expert,
        other_params=other,
        largest_linear=largest,
        linears=linears,
    )


def model_shapes(config: Any) -> ModelShapes:
    """[`ModelShapes`] of a model config (anything [`load_model_config`] takes), counted on the meta device."""
    config, _ = load_model_config(config)
    values = config.to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures"):
        values.pop(key, None)
    return _shapes_from_json(json.dumps(values, sort_keys=True, default=str))
