"""`load_judge`: builds a judge from a short name, a `kind:model` spec or a local path (what `--judge` accepts)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Judge


# name -> (kind, default keyword arguments)
JUDGE_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "refusal-strings": ("refusal", {"list_name": "hf-safety"}),
    "xstest-strings": ("refusal", {"list_name": "xstest-21"}),
    "llama-guard-3": ("llama-guard", {"model": "meta-llama/Llama-Guard-3-8B", "version": 3}),
    "llama-guard-3-1b": ("llama-guard", {"model": "meta-llama/Llama-Guard-3-1B", "version": 3}),
    "llama-guard-2": ("llama-guard", {"model": "meta-llama/Meta-Llama-Guard-2-8B", "version": 2}),
    "harmbench": ("harmbench", {"model": "cais/HarmBench-Llama-2-13b-cls", "variant": "repo"}),
    "harmbench-card": ("harmbench", {"model": "cais/HarmBench-Llama-2-13b-cls", "variant": "card"}),
    "harmbench-mistral": ("harmbench", {"model": "cais/HarmBench-Mistral-7b-val-cls", "variant": "mistral"}),
    "wildguard": ("wildguard", {"model": "allenai/wildguard"}),
    "llama-guard-4": ("llama-guard-4", {"model": "meta-llama/Llama-Guard-4-12B"}),
    "shieldgemma": ("shieldgemma", {"model": "google/shieldgemma-2b"}),
    "shieldgemma-2b": ("shieldgemma", {"model": "google/shieldgemma-2b"}),
    "shieldgemma-9b": ("shieldgemma", {"model": "google/shieldgemma-9b"}),
    "shieldgemma-27b": ("shieldgemma", {"model": "google/shieldgemma-27b"}),
    "strongreject-finetuned": ("strongreject", {"model": "qylu4156/strongreject-15k-v1", "evaluator": "finetuned"}),
}
# Names registered by other packages (`register_judge`): name -> factory(**kwargs) -> Judge
_REGISTERED: dict[str, Callable[..., Judge]] = {}
# `kind:argument` prefixes; for model kinds the argument is a Hub id or a local folder.
_PREFIXES: dict[str, tuple[str, dict[str, Any]]] = {
    "refusal": ("refusal", {}),
    "llama-guard": ("llama-guard", {}),
    "llama-guard-2": ("llama-guard", {"version": 2}),
    "llama-guard-3": ("llama-guard", {"version": 3}),
    "harmbench": ("harmbench", {}),
    "harmbench-card": ("harmbench", {"variant": "card"}),
    "harmbench-mistral": ("harmbench", {"variant": "mistral"}),
    "wildguard": ("wildguard", {}),
    "classifier": ("classifier", {}),
    "llama-guard-4": ("llama-guard-4", {}),
    "shieldgemma": ("shieldgemma", {}),
    "strongreject": ("strongreject", {"evaluator": "rubric"}),
    "strongreject-finetuned": ("strongreject", {"evaluator": "finetuned"}),
}


def register_judge(name: str, factory: Callable[..., Judge]) -> None:
    """
    Makes `load_judge(name, **kwargs)` (and so `judge: NAME` in a recipe or `--judge NAME`) return
    `factory(**kwargs)`. For judges that live outside this package, e.g. the toy world's `toy-seas`, registered when
    `hf_safety.toy` is imported. The built-in names cannot be replaced; registering a name again replaces its factory.
    """
    if name in JUDGE_NAMES or name.partition(":")[0] in _PREFIXES:
        raise ValueError(f"{name!r} is a built-in judge name; register another name")
    _REGISTERED[name] = factory


class JudgePathNotFoundError(FileNotFoundError, ValueError):
    """A judge spec names a local path (see [`looks_like_local_path`]) that does not exist."""


def looks_like_local_path(spec: str) -> bool:
    """
    Whether `spec` is meant as a local path rather than a Hub id: it starts with `/`, `./`, `../` or `~`, contains a
    backslash, or has more than one `/` (a Hub id is `org/name`).
    """
    return spec.startswith(("/", "./", "../", "~")) or "\\" in spec or spec.count("/") > 1


def _check_local_path(path: str, spec: str) -> str:
    """Returns `path` with `~` expanded; raises [`JudgePathNotFoundError`] if it is local-looking and missing."""
    if not looks_like_local_path(path):
        return path
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        where = "" if path == spec else f" (in judge spec {spec!r})"
        raise JudgePathNotFoundError(
            f"judge path not found: {path!r}{where} does not exist on this machine. Give an existing local model "
            "folder, a Hub id such as 'meta-llama/Llama-Guard-3-8B', or a judge name."
        )
    return expanded


def _build(kind: str, kwargs: dict[str, Any]) -> Judge:
    if kind == "refusal":
        from .refusal import RefusalStringJudge

        return RefusalStringJudge(**kwargs)
    if kind == "llama-guard":
        from .llama_guard import LlamaGuardJudge

        return LlamaGuardJudge(**kwargs)
    if kind == "harmbench":
        from .harmbench import HarmBenchJudge

        return HarmBenchJudge(**kwargs)
    if kind == "wildguard":
        from .wildguard import WildGuardJudge

        return WildGuardJudge(**kwargs)
    if kind == "llama-guard-4":
        from .llama_guard4 import LlamaGuard4Judge

        return LlamaGuard4Judge(**kwargs)
    if kind == "shieldgemma":
        from .shieldgemma import ShieldGemmaJudge

        return ShieldGemmaJudge(**kwargs)
    if kind == "strongreject":
        from .strongreject import StrongREJECTJudge

        return StrongREJECTJudge(**kwargs)
    from .classifier import ClassifierJudge

    return ClassifierJudge(**kwargs)


def _guess_kind(path: str) -> tuple[str, dict[str, Any]]:
    """Judge kind of a local model folder: from its config's architecture, else from its name."""
    config_file = Path(path) / "config.json"
    model_type = None
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        architectures = config.get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return "classifier", {}
        model_type = config.get("model_type")
    name = Path(path).resolve().name.lower()
    if "shieldgemma" in name:
        return "shieldgemma", {}
    if "strongreject" in name:
        return "strongreject", {"evaluator": "finetuned"}
    if "guard" in name and ("guard-4" in name or model_type in ("llama4", "llama4_text")):
        return "llama-guard-4", {}
    if "wildguard" in name:
        return "wildguard", {}
    if "harmbench" in name:
        return "harmbench", {"variant": "mistral"} if "mistral" in name else {}
    if "guard" in name:
        return "llama-guard", {"version": 2} if "guard-2" in name else {}
    raise ValueError(
        f"cannot tell which judge the model at {path!r} is; name it: "
        + ", ".join(
            f"'{prefix}:{path}'"
            for prefix in ("llama-guard-3", "llama-guard-4", "shieldgemma", "harmbench", "wildguard", "classifier")
        )
    )


def load_judge(name_or_spec: str | Judge | Callable, **kwargs: Any) -> Judge:
    """
    Builds a judge. Keyword arguments go to the judge's constructor and override the defaults of the name.

    Accepted forms:

    - a name: `"refusal-strings"` (this project's `"hf-safety"` refusal rule, see [`RefusalStringJudge`]),
      `"xstest-strings"` (XSTest 21 prefixes), `"llama-guard-3"`
      (`meta-llama/Llama-Guard-3-8B`), `"llama-guard-3-1b"`, `"llama-guard-2"` (`meta-llama/Meta-Llama-Guard-2-8B`),
      `"harmbench"` (`cais/HarmBench-Llama-2-13b-cls`, repo prompt), `"harmbench-card"` (card prompt),
      `"harmbench-mistral"` (`cais/HarmBench-Mistral-7b-val-cls`), `"wildguard"` (`allenai/wildguard`),
      `"llama-guard-4"` (`meta-llama/Llama-Guard-4-12B`, text only), `"shieldgemma"` / `"shieldgemma-2b"` /
      `"shieldgemma-9b"` / `"shieldgemma-27b"` (`google/shieldgemma-*`), `"strongreject-finetuned"` (StrongREJECT's
      fine-tuned evaluator `qylu4156/strongreject-15k-v1`, graded score);
    - `"refusal:LIST"` with a rule or list name (`hf-safety`, `gcg-29`, `gcg-27`, `gcg-13`, `xstest-21`);
    - `"KIND:MODEL"`, `KIND` one of `llama-guard`, `llama-guard-2`, `llama-guard-3`, `llama-guard-4`, `harmbench`,
      `harmbench-card`, `harmbench-mistral`, `wildguard`, `shieldgemma`, `strongreject` (the StrongREJECT rubric
      answered by the chat model `MODEL`), `strongreject-finetuned`, `classifier`, and `MODEL` a Hub id or a local
      folder;
    - a local folder: a sequence-classification checkpoint becomes a [`ClassifierJudge`]; otherwise the kind is
      guessed from the folder name (`wildguard`, `harmbench`, `shieldgemma`, `strongreject` (fine-tuned evaluator),
      `guard-4` or a Llama 4 `guard` (Llama Guard 4), `guard`) or an error asks for `KIND:PATH`;
    - a [`Judge`] (returned as is) or a callable (wrapped in a [`CallableJudge`]);
    - a name registered with [`register_judge`] (e.g. `"toy-seas"`, once `hf_safety.toy` is imported).

    A local-looking path (starting with `/`, `./`, `../` or `~`, containing a backslash, or with more than one `/`),
    alone or as the `MODEL` of `"KIND:MODEL"`, that does not exist raises [`JudgePathNotFoundError`] (a
    `FileNotFoundError` and a `ValueError`) naming the path, instead of an "unknown judge" or Hub error.
    """
    if isinstance(name_or_spec, Judge):
        return name_or_spec
    if callable(name_or_spec):
        from .classifier import CallableJudge

        return CallableJudge(name_or_spec, **kwargs)
    spec = str(name_or_spec).strip()
    if spec in JUDGE_NAMES:
        kind, defaults = JUDGE_NAMES[spec]
        return _build(kind, {**defaults, **kwargs})
    if spec in _REGISTERED:
        return _REGISTERED[spec](**kwargs)
    if spec == "strongreject":  # the rubric needs a chat model to answer it
        if "model" in kwargs:
            return _build("strongreject", {"evaluator": "rubric", **kwargs})
        raise ValueError(
            "the StrongREJECT rubric needs a judge model: use 'strongreject:MODEL' (a local chat model or Hub id) or "
            "'strongreject-finetuned' (the fine-tuned evaluator)"
        )
    prefix, sep, argument = spec.partition(":")
    if sep and prefix in _PREFIXES and argument:
        kind, defaults = _PREFIXES[prefix]
        if kind == "refusal":
            return _build(kind, {**defaults, "list_name": argument, **kwargs})
        return _build(kind, {**defaults, "model": _check_local_path(argument, spec), **kwargs})
    spec = _check_local_path(spec, spec)
    if os.path.isdir(spec):
        kind, defaults = _guess_kind(spec)
        return _build(kind, {**defaults, "model": spec, **kwargs})
    names = sorted(JUDGE_NAMES) + sorted(_REGISTERED) + [f"{p}:..." for p in _PREFIXES]
    raise ValueError(f"unknown judge {spec!r}; use one of {names} or a local model folder")
