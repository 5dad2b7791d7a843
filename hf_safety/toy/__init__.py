"""A toy safety world that runs on CPU without the Hub: a tokenizer, tiny models and datasets, all built locally.

Recipes name them `toy://...`: [`resolve_model`] materialises a model and its tokenizer in a local folder, which is
then loaded by path exactly like a real checkpoint. Importing this package registers `resolve_model` for `toy://`
names with the package's model loader (`hf_safety.models.register_model_resolver`); the CLI and the training scripts
import it, product code never does (the toy world is a leaf).

- `toy://tiny-llama`: a randomly initialised tiny Llama with a word-level Llama-3-style tokenizer.
- `toy://unsafe-llama`: the same architecture "pretrained" on the [`ToyWorld`] to answer every request, harmful ones
  included: the unsafe starting point of the demo.
- `toy://safety`: the toy world's safety data (see `hf_safety.scripts.derta.load_data`).
- `toy://seas-target`, `toy://seas-red-team`: the starting points T0 and R0 of the toy SEAS world
  ([`hf_safety.toy.seas`], `hf-safety demo --method seas`); importing this package also registers the judge name
  `toy-seas` ([`~hf_safety.toy.seas.ToySEASJudge`]) with `hf_safety.judges.load_judge`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ..judges.factory import register_judge
from ..models import register_model_resolver
from .model import tiny_config, tiny_model
from .tokenizer import build_tokenizer
from .world import ToyWorld


TOY_MODEL = "toy://tiny-llama"
TOY_UNSAFE_MODEL = "toy://unsafe-llama"
TOY_DATASET = "toy://safety"
TOY_SEAS_MODELS = ("toy://seas-target", "toy://seas-red-team")
BUILD_MARKER = "toy_build.json"

__all__ = [
    "BUILD_MARKER",
    "TOY_DATASET",
    "TOY_MODEL",
    "TOY_SEAS_MODELS",
    "TOY_UNSAFE_MODEL",
    "ToyWorld",
    "build_atomically",
    "build_tokenizer",
    "is_complete",
    "resolve_model",
    "tiny_config",
    "tiny_model",
]


def is_complete(path: str | os.PathLike) -> bool:
    """Whether `path` holds a finished toy model: its build marker ([`BUILD_MARKER`]) is written last, so a folder
    without it (an interrupted build, or one from a version that wrote no marker) is never loaded."""
    return (Path(path) / BUILD_MARKER).is_file()


def build_atomically(path: str | os.PathLike, build: Callable[[Path], None], name: str) -> Path:
    """
    Runs `build(folder)` in a temporary folder beside `path`, writes the build marker last and renames the folder
    into place, so a concurrent run never sees a half-written model: if another run finished `path` meanwhile, its
    folder is kept and this one dropped; an incomplete folder left at `path` is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    stale = tmp.with_name(f"{tmp.name}-stale")
    try:
        build(tmp)
        (tmp / BUILD_MARKER).write_text(json.dumps({"name": name, "built": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        for _ in range(3):
            try:
                os.replace(tmp, path)  # atomic; fails while `path` is a non-empty folder
                break
            except OSError:
                if is_complete(path):  # another run finished first: use its folder
                    break
                with contextlib.suppress(FileNotFoundError):  # a half-written folder: move it aside, then retry
                    os.replace(path, stale)
        else:
            raise OSError(f"could not move the toy model built in {tmp} to {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # left only when another run won the race, or the build failed
        shutil.rmtree(stale, ignore_errors=True)
    return path


def resolve_model(name_or_path: str, cache_dir: str | None = None) -> str:
    """
    Returns `name_or_path` unchanged, except for the `toy://` models: those are built once under `cache_dir`
    (default `$HF_SAFETY_CACHE` or `~/.cache/hf_safety`), atomically (see [`build_atomically`]), and that folder's
    path is returned.

    Raises:
        `ValueError`: a `toy://` name that is not a toy model.
    """
    if name_or_path not in (TOY_MODEL, TOY_UNSAFE_MODEL, *TOY_SEAS_MODELS):
        if str(name_or_path).startswith("toy://"):
            known = ", ".join(repr(n) for n in (TOY_MODEL, TOY_UNSAFE_MODEL, *TOY_SEAS_MODELS))
            raise ValueError(f"unknown toy model {name_or_path!r}: the toy models are {known}")
        return name_or_path
    root = Path(cache_dir or os.environ.get("HF_SAFETY_CACHE", Path.home() / ".cache" / "hf_safety"))
    if name_or_path in TOY_SEAS_MODELS:
        from .seas_demo import build_toy_seas_model, toy_seas_model_path

        path = toy_seas_model_path(name_or_path, root)
        if is_complete(path):
            return str(path)
        side = "target T0" if name_or_path == TOY_SEAS_MODELS[0] else "red team R0"
        print(f"building the toy SEAS {side} {name_or_path} (SFT of a tiny Llama, ~10-20 s) into {path}", flush=True)
        return str(build_atomically(path, lambda folder: build_toy_seas_model(name_or_path, folder), name_or_path))
    path = root / ("toy-unsafe-llama" if name_or_path == TOY_UNSAFE_MODEL else "toy-tiny-llama")
    if is_complete(path):
        return str(path)
    world = ToyWorld()
    tokenizer = build_tokenizer(world.corpus(), chat_format="llama3", model="word")
    if name_or_path == TOY_UNSAFE_MODEL:
        from .demo import DemoConfig, pretrain_unsafe

        what = "pretraining a tiny Llama on the toy world to answer everything, ~30-60 s on 2 CPU cores"

        def build(folder: Path) -> None:
            pretrain_unsafe(DemoConfig(progress=False), world, tokenizer, folder.parent, name=folder.name, quiet=True)

    else:
        what = "a randomly initialised tiny Llama, a few seconds"

        def build(folder: Path) -> None:
            model = tiny_model(tokenizer, "llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
            tokenizer.save_pretrained(folder)
            model.save_pretrained(folder)

    print(f"building the toy model {name_or_path} ({what}) into {path}", flush=True)
    return str(build_atomically(path, build, name_or_path))


def _toy_seas_judge(**kwargs):
    from .seas import ToySEASJudge

    return ToySEASJudge(**kwargs)


register_model_resolver("toy", resolve_model)
register_judge("toy-seas", _toy_seas_judge)
