"""THE model loader: one place turns a Hub id, a local folder or a registered name (`toy://...`) into a model and its
tokenizer, for evaluation, the judges and SEAS alike (the trainers load through TRL, as `SFTTrainer` does).

- `trust_remote_code` is off unless the caller turns it on.
- `load_in_4bit=True` quantizes with the QLoRA config ([`bnb_4bit_config`]: NF4, double quantization).
- A name that looks like a local path (`./x`, `/x`, `~/x`, `a/b/c`) and does not exist raises "path not found",
  not a Hub repo-id error; a name that may be either (`org/name`) says both what was looked for locally and what the
  Hub said.
- Name schemes such as `toy://` resolve through resolvers registered with [`register_model_resolver`]; the toy world
  registers its own when `hf_safety.toy` is imported (the CLI and scripts do), so product code never imports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)


TASKS = ("causal-lm", "sequence-classification")
_AUTO_CLASSES = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification}
_RESOLVERS: dict[str, Callable[[str], str]] = {}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


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
        device_map (optional): passed to `from_pretrained`; defaults to `"auto"` when CUDA is available, and to
            `"cpu"` for a 4-bit load without CUDA.
        load_in_4bit (`bool`, defaults to `False`): quantize with [`bnb_4bit_config`] (needs `bitsandbytes`).
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
    if device_map is None and torch.cuda.is_available():
        device_map = "auto"
    if load_in_4bit:
        device_map = device_map or "cpu"
        if bnb_4bit_compute_dtype is None and device_map == "cpu":
            bnb_4bit_compute_dtype = torch.float32
        kwargs["quantization_config"] = bnb_4bit_config(bnb_4bit_compute_dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
    kwargs.update(model_kwargs or {})
    model = _from_pretrained(_AUTO_CLASSES[task].from_pretrained, name, "model", **kwargs)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = load_tokenizer(tokenizer or name, trust_remote_code=trust_remote_code, revision=revision)
    return model, tokenizer


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
