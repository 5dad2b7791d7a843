"""THE model loader: one place turns a Hub id, a local folder or a registered name (`toy://...`) into a model and its
tokenizer, for evaluation, the judges and SEAS alike (the trainers load through TRL, as `SFTTrainer` does).

- `trust_remote_code` is off unless the caller turns it on.
- `load_in_4bit=True` quantizes with the QLoRA config ([`bnb_4bit_config`]: NF4, double quantization); the fused
  experts of an MoE (Mixtral, Qwen-MoE, ...), which bitsandbytes leaves in 16-bit, are quantized too
  ([`from_pretrained_4bit_experts`]).
- A name that looks like a local path (`./x`, `/x`, `~/x`, `a/b/c`) and does not exist raises "path not found",
  not a Hub repo-id error; a name that may be either (`org/name`) says both what was looked for locally and what the
  Hub said.
- Name schemes such as `toy://` resolve through resolvers registered with [`register_model_resolver`]; the toy world
  registers its own when `hf_safety.toy` is imported (the CLI and scripts do), so product code never imports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import logging

from .quant import find_fused_experts, moe_experts_layout_error, quantize_moe_experts


TASKS = ("causal-lm", "sequence-classification")
_AUTO_CLASSES = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification}
_RESOLVERS: dict[str, Callable[[str], str]] = {}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
logger = logging.get_logger(__name__)


def register_model_resolver(scheme: str, resolver: Callable[[str], str]) -> None:
    """
    Makes names `"{scheme}://..."` loadable: `resolver(name)` returns a local folder (or Hub id) to load instead.

    ```python
    >>> register_model_resolver("toy", resolve_toy_model)  # what `import hf_safety.toy` does
    >>> load_model_and_tokenizer("toy://tiny-llama")
    ```
    """
    _RESOLVERS[scheme] = resolver


def resolve_model_name(name_or_path: str | os.PathLike) -> str:
    """`name_or_path` as a loadable id or folder: registered schemes are resolved, anything else is returned as is.

    Raises:
        `ValueError`: a `scheme://` name whose scheme has no resolver.
    """
    name = str(name_or_path)
    match = _SCHEME.match(name)
    if match is None:
        return name
    scheme = match.group(1)
    if scheme not in _RESOLVERS:
        hint = " (import hf_safety.toy to register the toy world's models)" if scheme == "toy" else ""
        raise ValueError(f"no resolver for model name {name!r}: registered schemes are {sorted(_RESOLVERS)}{hint}")
    return _RESOLVERS[scheme](name)


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only be a local path: absolute, `./`, `../`, `~`, a backslash, or more than one `/` (a Hub
    id is `name` or `org/name`)."""
    return (
        name.startswith(("/", "./", "../", "~", ".\\"))
        or name in (".", "..")
        or "\\" in name
        or name.count("/") > 1
        or bool(re.match(r"^[a-zA-Z]:[\\/]", name))
    )


def check_model_path(name_or_path: str | os.PathLike) -> str:
    """Returns the name (user-expanded) or raises `FileNotFoundError` for a local-looking path that does not exist."""
    name = str(name_or_path)
    expanded = os.path.expanduser(name)
    if looks_like_local_path(name) and not os.path.exists(expanded):
        raise FileNotFoundError(f"path not found: {name!r} (no such local folder)")
    return expanded if os.path.exists(expanded) else name


def bnb_4bit_config(compute_dtype: torch.dtype | None = None, quant_storage: torch.dtype | None = None):
    """
    The QLoRA 4-bit config: NF4 with double quantization. `compute_dtype` defaults to bfloat16 on CUDA and float32
    elsewhere (bitsandbytes >= 0.49 also runs NF4 on CPU); `quant_storage` (e.g. bfloat16 for FSDP-QLoRA) is left to
    bitsandbytes' default unless given.
    """
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    kwargs: dict[str, Any] = {}
    if quant_storage is not None:
        kwargs["bnb_4bit_quant_storage"] = quant_storage
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        **kwargs,
    )


def is_bnb_4bit(quantization_config: Any) -> bool:
    """Whether `quantization_config` (a `BitsAndBytesConfig` or its dict) asks for bitsandbytes 4-bit."""
    if isinstance(quantization_config, dict):
        return bool(quantization_config.get("load_in_4bit"))
    return isinstance(quantization_config, BitsAndBytesConfig) and quantization_config.load_in_4bit


def meta_model(config: Any, *, task: str = "causal-lm", dtype: torch.dtype | None = None, **kwargs: Any) -> Any:
    """The model of `config` built on the meta device: its modules, names and parameter shapes, no weights and no
    memory (milliseconds even for 70B). `task` as in [`load_model_and_tokenizer`]; `AutoModel` for `"base"`."""
    auto_class = AutoModel if task == "base" else _AUTO_CLASSES[task]
    with torch.device("meta"):
        return auto_class.from_config(config, **({"dtype": dtype} if dtype is not None else {}), **kwargs)


def fused_experts_layouts(
    name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None
) -> dict[str, str | None]:
    """
    The fused-expert modules of the checkpoint's architecture (transformers 5 Mixtral, Qwen-MoE, OLMoE, ...: experts
    as 3-D parameters, which bitsandbytes does not quantize), each with `None` when
    [`~hf_safety.quant.quantize_moe_experts`] converts it, else why not. Empty for a dense model or an architecture
    `AutoModel` does not know. Reads the config and builds the model on the meta device (no weights; milliseconds).
    """
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    try:
        skeleton = meta_model(config, task="base", trust_remote_code=trust_remote_code)
    except Exception as err:  # not buildable from its config alone: loaded as it is
        logger.debug(f"no meta skeleton for {name_or_path!r} ({err}); assuming no fused experts")
        return {}
    return {name: moe_experts_layout_error(skeleton.get_submodule(name)) for name in find_fused_experts(skeleton)}


def quantizes_experts(
    name_or_path: str, quantization_config: Any, *, trust_remote_code: bool = False, revision: str | None = None
) -> bool:
    """Whether loading `name_or_path` with `quantization_config` takes [`from_pretrained_4bit_experts`]'s path:
    bitsandbytes 4-bit, and fused experts that [`~hf_safety.quant.quantize_moe_experts`] converts (fused experts of
    another layout are warned about: they stay 16-bit, as bitsandbytes leaves them)."""
    if not is_bnb_4bit(quantization_config):
        return False
    layouts = fused_experts_layouts(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    unsupported = {name: error for name, error in layouts.items() if error is not None}
    if unsupported:
        logger.warning(f"{name_or_path}: fused experts hf_safety cannot quantize stay 16-bit: {unsupported}")
    return len(unsupported) < len(layouts)


def default_device_map() -> str | dict[str, int] | None:
    """Where a model goes when the caller names no `device_map`: nowhere in particular without CUDA (`None`), the
    process's own GPU under a multi-process launch (`accelerate launch`, `torchrun`: `WORLD_SIZE` > 1, `LOCAL_RANK`),
    so that every process holds one whole copy (a judge, a reference model), else `"auto"`; `None` under DeepSpeed
    ZeRO-3, which places the weights itself."""
    if not torch.cuda.is_available() or is_deepspeed_zero3_enabled():
        return None
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return {"": int(local_rank)}
    return "auto"


def _single_device(device_map: Any) -> torch.device | None:
    """The one device `device_map` puts the model on (`None`/"auto"/"balanced"...: the current GPU, else CPU), or
    `None` for a map over several devices."""
    if isinstance(device_map, dict):
        devices = set(device_map.values())
        return _single_device(devices.pop()) if len(devices) == 1 else None
    if device_map is None or device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device("cuda", device_map) if isinstance(device_map, int) else torch.device(device_map)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def from_pretrained_4bit_experts(from_pretrained: Callable[..., Any], name: str, **kwargs: Any) -> Any:
    """
    `from_pretrained(name, **kwargs)`, except that when `kwargs["quantization_config"]` asks for bitsandbytes 4-bit
    and the checkpoint is a fused-expert MoE ([`fused_experts_layouts`]), the experts end up in 4-bit as well
    ([`~hf_safety.quant.quantize_moe_experts`], with the config's quant type, double quantization, compute and storage
    dtypes).

    GPU memory at load: the 16-bit experts (≈ 90 GB for Mixtral-8x7B) never land on the GPU. For a model going to one
    device, the model is loaded with `device_map="cpu"` (attention etc. quantized there by bitsandbytes), then each
    expert is copied to the target device alone and quantized there, and the rest of the model follows with
    `model.to(device)`. The cost is CPU RAM: about the 16-bit size of the experts (≈ 90 GB for Mixtral-8x7B, per
    process), released layer by layer during the conversion. A `device_map` over several devices is loaded as given
    (the 16-bit experts must fit where it puts them) and the experts are quantized where they are.
    `from_pretrained` is any callable with `from_pretrained`'s signature (e.g. TRL's `create_model_from_path`).
    """
    config = kwargs.get("quantization_config")
    if not quantizes_experts(
        name, config, trust_remote_code=kwargs.get("trust_remote_code", False), revision=kwargs.get("revision")
    ):
        return from_pretrained(name, **kwargs)
    if isinstance(config, dict):
        config = BitsAndBytesConfig.from_dict(config)
    quant = dict(
        compute_dtype=config.bnb_4bit_compute_dtype,
        quant_type=config.bnb_4bit_quant_type,
        double_quant=config.bnb_4bit_use_double_quant,
        quant_storage=config.bnb_4bit_quant_storage,
        strict=False,  # an MoE layout the converter does not know still loads (warned), as bitsandbytes left it
    )
    device = _single_device(kwargs.get("device_map", default_device_map()))
    if device is None:
        model = from_pretrained(name, **kwargs)
        quantize_moe_experts(model, **quant)
        return model
    model = from_pretrained(name, **{**kwargs, "device_map": "cpu"})
    quantize_moe_experts(model, device=device, **quant)
    if device.type != "cpu":
        model.to(device)
        if hasattr(model, "hf_device_map"):  # accelerate checks a 4-bit model is where it trains
            model.hf_device_map = {"": device.index if device.type == "cuda" else str(device)}
    return model


def _from_pretrained(loader: Callable[..., Any], name: str, what: str, **kwargs: Any) -> Any:
    """Calls `loader(name, **kwargs)`; an `org/name` that is neither a folder nor loadable from the Hub says both."""
    try:
        return loader(name, **kwargs)
    except OSError as err:
        if os.path.exists(name):
            raise
        raise OSError(
            f"could not load the {what} {name!r}: there is no local folder of that name (path not found), and as a "
            f"Hub repo id it failed: {err}"
        ) from err


def load_tokenizer(
    name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer of a Hub id, a local folder or a registered name, with the same checks as the model."""
    name = check_model_path(resolve_model_name(name_or_path))
    return _from_pretrained(
        AutoTokenizer.from_pretrained, name, "tokenizer", trust_remote_code=trust_remote_code, revision=revision
    )


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike,
    task: str = "causal-lm",
    *,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
    dtype: torch.dtype | str = "auto",
    device_map: str | dict | None = None,
    load_in_4bit: bool = False,
    bnb_4bit_compute_dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """
    Loads a model and its tokenizer with `from_pretrained`.

    Args:
        name_or_path (`str` or `os.PathLike`): Hub id, local folder, or a registered name (`toy://...`).
        task (`str`, defaults to `"causal-lm"`): `"causal-lm"` (`AutoModelForCausalLM`) or `"sequence-classification"`.
        tokenizer (optional): a tokenizer, or where to load it from (default: `name_or_path`).
        dtype (defaults to `"auto"`): the checkpoint's dtype unless given.
        device_map (optional): passed to `from_pretrained`; defaults to [`default_device_map`] (`"auto"` with CUDA,
            the process's own GPU under a multi-process launch), and to `"cpu"` for a 4-bit load without CUDA.
        load_in_4bit (`bool`, defaults to `False`): quantize with [`bnb_4bit_config`] (needs `bitsandbytes`); the
            experts of a fused-expert MoE too (see [`from_pretrained_4bit_experts`]).
        bnb_4bit_compute_dtype (optional): compute dtype of the 4-bit layers (default: float32 with
            `device_map="cpu"`, else as [`bnb_4bit_config`]).
        trust_remote_code (`bool`, defaults to `False`): only set it for checkpoints you have read.
        revision (`str`, *optional*): a commit, tag or branch to pin.
        model_kwargs (`dict`, *optional*): more `from_pretrained` keyword arguments.

    Raises:
        `FileNotFoundError`: a local-looking path that does not exist ("path not found").
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    name = check_model_path(resolve_model_name(name_or_path))
    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=trust_remote_code, revision=revision)
    if device_map is None:
        device_map = default_device_map()
    if load_in_4bit:
        device_map = device_map or "cpu"
        if bnb_4bit_compute_dtype is None and device_map == "cpu":
            bnb_4bit_compute_dtype = torch.float32
        kwargs["quantization_config"] = bnb_4bit_config(bnb_4bit_compute_dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
    kwargs.update(model_kwargs or {})
    from_pretrained = _AUTO_CLASSES[task].from_pretrained
    model = _from_pretrained(partial(from_pretrained_4bit_experts, from_pretrained), name, "model", **kwargs)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = load_tokenizer(tokenizer or name, trust_remote_code=trust_remote_code, revision=revision)
    return model, tokenizer


@contextmanager
def arguments_set(args: Any, **values: Any) -> Iterator[None]:
    """Sets attributes of `args` (a trainer's config) for the duration of the block, then gives the user's values back,
    also on error: for a trainer that loaded its model itself, so that its TRL parent's init neither sees
    `model_init_kwargs` again (it would warn they are ignored) nor keeps the arguments changed for good."""
    saved = {key: getattr(args, key) for key in values}
    for key, value in values.items():
        setattr(args, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(args, key, value)


def model_name(model: Any) -> str:
    """A model's `config._name_or_path` (Hub id or folder), or its class name for a model built in memory."""
    return getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__


def as_model_and_tokenizer(
    model: str | os.PathLike | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
    **load_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """
    `(model, tokenizer, name)` from a loaded model (passed through; its tokenizer is loaded from its folder when not
    given) or from a name/path (loaded with [`load_model_and_tokenizer`] and `load_kwargs`).
    """
    if isinstance(model, (str, Path, os.PathLike)):
        name = str(model)
        model, tokenizer = load_model_and_tokenizer(name, tokenizer=tokenizer, **load_kwargs)
        return model, tokenizer, name
    if tokenizer is None:
        source = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not source:
            raise ValueError("pass the tokenizer: it cannot be found from a model built in memory")
        tokenizer = source
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = load_tokenizer(tokenizer, trust_remote_code=load_kwargs.get("trust_remote_code", False))
    return model, tokenizer, model_name(model)
