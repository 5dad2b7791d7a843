"""What a card may say about a run: public names (no local path, no token), the hyper-parameters worth a table
(picked by allow-list from a training config), and the versions of the libraries that trained it."""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..models import looks_like_local_path


# Anything shaped like a Hugging Face token is never written, wherever it appears
HF_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")
REDACTED = "<redacted>"
# Hub repo ids: `name` or `namespace/name` (the Hub's own rule, without looking anything up)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[\w.-]*[A-Za-z0-9]$")
# Data files given by path (read with `load_dataset("json", data_files=...)` and the like)
_DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".tsv")

# The hyper-parameters a card lists: the method's own fields plus what says how a run trained. Everything else (paths,
# Hub settings, tokens, logging) stays out, whatever the config holds.
TRAINING_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "max_length",
    "packing",
    "padding_free",
    "completion_only_loss",
    "assistant_only_loss",
    "loss_type",
    "bf16",
    "fp16",
    "activation_checkpointing",
    "seed",
)
DERTA_FIELDS = (
    "harmful_prefix",
    "rto",
    "rto_weight",
    "refusal_text",
    "prefix_length_sampling",
    "empty_prefix_prob",
    "rto_position_keep",
    "derta_form",
    "skip_invalid_rows",
)
DPO_FIELDS = ("beta", "max_prompt_length", "max_completion_length", "label_smoothing", "rpo_alpha")
SEAS_FIELDS = (
    "num_iterations",
    "accumulate_pairs",
    "num_seed_examples",
    "num_adversarial_prompts",
    "num_responses",
    "seeds_per_iteration",
    "seed_sampling",
    "red_team_temperature",
    "red_team_top_p",
    "red_team_max_new_tokens",
    "target_temperature",
    "target_top_p",
    "target_max_new_tokens",
    "max_prompt_chars",
    "max_response_chars",
    "judge",
    "judge_mode",
    "general_data_ratio",
    "general_data_side",
    "red_team_learning_rate",
    "red_team_num_train_epochs",
    "red_team_beta",
    "attack_chunk_size",
)
LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora")
# Never in a table, even when passed by hand: names of secrets and of path-valued settings
_DENIED_NAME = re.compile(r"token|secret|password|(^|_)dirs?(_|$)|path|resume_from|hub_|url|report_to|run_name|cache")


def path_tail(path: str) -> str:
    """The last component of a path, `/` or `\\` separated ("" for `.`, `~`, `C:` and the like)."""
    parts = [p for p in re.split(r"[\\/]+", path) if p]
    tail = parts[-1] if parts else ""
    return "" if tail in (".", "..", "~") or re.fullmatch(r"[A-Za-z]:", tail) else tail


def is_local(name: str) -> bool:
    """Whether `name` names something on this machine: a path by its shape (see `looks_like_local_path`), a
    `file:` URL, a data file, or a relative path that exists here."""
    if name.startswith("file:"):
        return True
    if "://" in name:
        return False
    return (
        looks_like_local_path(name)
        or name.lower().endswith(_DATA_FILE_SUFFIXES)
        or (bool(name) and os.path.exists(os.path.expanduser(name)))
    )


def hub_id(name: str | None) -> str | None:
    """`name` if it is a Hub repo id (for `base_model` / `datasets` metadata), else None (a local path, a registered
    name such as `toy://...`, anything else)."""
    if not name or not isinstance(name, str) or is_local(name) or "://" in name or not _REPO_ID.match(name):
        return None
    return name


def public_name(name: str | None, kind: str = "model") -> str:
    """How prose names `name`: a Hub id or registered name as it is, a local path by its folder's name only
    (`"a local model (`model`)"`), nothing at all as `"a {kind} given as an object"`."""
    if not name:
        return f"a {kind} given as an object"
    if is_local(name):
        tail = path_tail(name.removeprefix("file:"))
        return f"a local {kind} (`{tail}`)" if tail else f"a local {kind}"
    return f"`{scrub_text(name)}`"


def _public_word(word: str) -> str:
    if "://" in word and not word.startswith("file:"):
        return word
    head, sep, tail = word.partition(":")  # a spec such as `classifier:/models/judge`
    if sep and len(head) > 1 and "/" not in head and head != "file" and tail and is_local(tail):
        return f"{head}:{path_tail(tail) or '<local path>'}"
    if is_local(word):
        return path_tail(word.removeprefix("file:")) or "<local path>"
    return word


TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_API_TOKEN")


def known_tokens(token: str | bool | None = None) -> list[str]:
    """The token values in play (whatever their shape): `token` when given as a string, the `huggingface_hub` login
    and the token environment variables. None of them is ever written, logged or shown."""
    from huggingface_hub import get_token

    values = [
        token if isinstance(token, str) else None,
        get_token(),
        *(os.environ.get(name) for name in TOKEN_ENV_VARS),
    ]
    return sorted({value for value in values if value and len(value) >= 8})


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every token shaped like one (`hf_...`) and every value of `secrets` replaced by `<redacted>`."""
    text = HF_TOKEN_PATTERN.sub(REDACTED, text)
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return text


def scrub_text(text: str) -> str:
    """`text` without tokens (`hf_...`) and with every local path cut to its last component."""
    text = HF_TOKEN_PATTERN.sub(REDACTED, text)
    return re.sub(r"[^\s,;=|'\"`()\[\]{}<>]+", lambda m: _public_word(m.group(0)), text)


def scrub_value(value: Any) -> Any:
    """A hyper-parameter value fit for a card: strings scrubbed, lists and dicts scrubbed item by item."""
    if isinstance(value, enum.Enum):  # e.g. `lr_scheduler_type`
        value = value.value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {str(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [scrub_value(v) for v in items]
    return value


def public_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """`hyperparameters` as a card shows them: secrets and path-valued settings dropped by name, None values dropped,
    the rest scrubbed (see `scrub_value`)."""
    return {
        name: scrub_value(value)
        for name, value in hyperparameters.items()
        if value is not None and not _DENIED_NAME.search(name.lower())
    }


def hyperparameters_from_args(
    args: Any, method_fields: Iterable[str] = (), peft_config: Any = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """
    The hyper-parameters of a run for its card: `TRAINING_FIELDS` and `method_fields` read from the config `args`
    (an allow-list: nothing else of the config is read), the LoRA settings of `peft_config`, then `overrides`.
    """
    values = {name: getattr(args, name) for name in (*TRAINING_FIELDS, *method_fields) if hasattr(args, name)}
    if peft_config is not None:
        lora = dataclasses.asdict(peft_config) if dataclasses.is_dataclass(peft_config) else vars(peft_config)
        values.update({f"lora_{k}" if not k.startswith("lora_") else k: lora[k] for k in LORA_FIELDS if k in lora})
    if values.get("max_steps", 0) < 0:  # not set: the epochs decide
        del values["max_steps"]
    values.update(overrides or {})
    return public_hyperparameters(values)


def is_adapter(model: Any) -> bool:
    """Whether `model` is a PEFT model (its repo holds an adapter)."""
    return hasattr(model, "peft_config")


def card_hyperparameters(model: Any, args: Any, method_fields: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
    """The hyper-parameters of a trainer's run for its card: [`hyperparameters_from_args`] with the LoRA settings of
    `model` (a PEFT model's active adapter) and whether it was loaded in 4 bits (QLoRA)."""
    peft_config = None
    if is_adapter(model):
        configs = model.peft_config
        name = getattr(model, "active_adapter", "default")
        peft_config = configs.get(name if isinstance(name, str) else "default") or next(iter(configs.values()), None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "is_loaded_in_4bit", False):
        overrides.setdefault("quantization", "4-bit (QLoRA)")
    return hyperparameters_from_args(args, method_fields, peft_config, overrides)


def framework_versions() -> dict[str, str]:
    """Installed versions of hf_safety and the libraries it trains with (`"not installed"` for a missing one)."""
    from .. import __version__

    versions = {"hf_safety": __version__}
    for package in ("trl", "transformers", "torch", "peft", "datasets", "huggingface_hub"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
