"""A toy safety world that runs on CPU without the Hub: a tokenizer, tiny models and datasets, all built locally.

Recipes name them `toy://...`: [`resolve_model`] materialises a model and its tokenizer in a local folder, which is
then loaded by path exactly like a real checkpoint. Importing this package registers `resolve_model` for `toy://`
names with the package's model loader (`hf_safety.models.register_model_resolver`); the CLI and the training scripts
import it, product code never does (the toy world is a leaf).

- `toy://tiny-llama`: a randomly initialised tiny Llama with a word-level Llama-3-style tokenizer.
- `toy://unsafe-llama`: the same architecture "pretrained" on the [`ToyWorld`] to answer every request, harmful ones
  included: the unsafe starting point of the demo.
- `toy://safety`: the toy world's safety data (see `hf_safety.scripts.derta.load_data`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..models import register_model_resolver
from .model import tiny_config, tiny_model
from .tokenizer import build_tokenizer
from .world import ToyWorld


TOY_MODEL = "toy://tiny-llama"
TOY_UNSAFE_MODEL = "toy://unsafe-llama"
TOY_DATASET = "toy://safety"

__all__ = [
    "TOY_DATASET",
    "TOY_MODEL",
    "TOY_UNSAFE_MODEL",
    "ToyWorld",
    "build_tokenizer",
    "resolve_model",
    "tiny_config",
    "tiny_model",
]


def resolve_model(name_or_path: str, cache_dir: str | None = None) -> str:
    """
    Returns `name_or_path` unchanged, except for the `toy://` models: those are built once under `cache_dir`
    (default `$HF_SAFETY_CACHE` or `~/.cache/hf_safety`) and that folder's path is returned.

    Raises:
        `ValueError`: a `toy://` name that is not a toy model.
    """
    if name_or_path not in (TOY_MODEL, TOY_UNSAFE_MODEL):
        if str(name_or_path).startswith("toy://"):
            raise ValueError(
                f"unknown toy model {name_or_path!r}: the toy models are {TOY_MODEL!r}, {TOY_UNSAFE_MODEL!r}"
            )
        return name_or_path
    root = Path(cache_dir or os.environ.get("HF_SAFETY_CACHE", Path.home() / ".cache" / "hf_safety"))
    if name_or_path == TOY_UNSAFE_MODEL:
        from .demo import DemoConfig, pretrain_unsafe

        path = root / "toy-unsafe-llama"
        if not (path / "config.json").exists():
            world = ToyWorld()
            tokenizer = build_tokenizer(world.corpus(), chat_format="llama3", model="word")
            pretrain_unsafe(DemoConfig(progress=False), world, tokenizer, root, name=path.name)
        return str(path)
    path = root / "toy-tiny-llama"
    if not (path / "config.json").exists():
        tokenizer = build_tokenizer(ToyWorld().corpus(), chat_format="llama3", model="word")
        model = tiny_model(tokenizer, "llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
        tokenizer.save_pretrained(path)
        model.save_pretrained(path)
    return str(path)


register_model_resolver("toy", resolve_model)
