"""One way to name a dataset everywhere (recipes, builders, the CLI): a local data file, a local folder, a data build
spec (`.yaml`, built by `hf_safety.data.build`), or a Hub dataset id."""

from __future__ import annotations

import os
from typing import Any

import datasets
from datasets import Dataset, DatasetDict


DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPEC_SUFFIXES = (".yaml", ".yml")


def is_build_spec(name: str) -> bool:
    """Whether `name` is a data build spec (a `.yaml` file read by `hf_safety.data.build.load_build_spec`)."""
    return isinstance(name, str) and name.endswith(SPEC_SUFFIXES)


def load_rows(
    path: str, split: str | None = "train", *, config: str | None = None, **load_kwargs: Any
) -> Dataset | DatasetDict:
    """
    Loads a dataset by `path`, with `split` (a `Dataset`) or `split=None` (a `DatasetDict`):

    - a local data file (`.jsonl`, `.json`, `.csv`, `.parquet`): loaded as the split `split`;
    - a data build spec (`.yaml`): built by `hf_safety.data.build.build_from_spec`, as the split `split`;
    - anything else (a local folder or a Hub id): `datasets.load_dataset(path, name=config, split=split, ...)`.
    """
    if is_build_spec(path):
        from .build import build_from_spec

        built = build_from_spec(path)
        return built if split is not None else DatasetDict({"train": built})
    for suffix, builder in DATA_FILE_BUILDERS.items():
        if path.endswith(suffix):
            if not os.path.exists(path):
                raise FileNotFoundError(f"data file not found: {path}")
            key = split or "train"
            loaded = datasets.load_dataset(builder, data_files={key: path}, **load_kwargs)
            return loaded[key] if split is not None else loaded
    kwargs = {k: v for k, v in {"name": config, **load_kwargs}.items() if v is not None}
    return datasets.load_dataset(path, split=split, **kwargs)
