"""
Data build specs: which builder of `hf_safety.data.sources` to run on which source, or the DeRTa training mix of two
such builds, written as YAML. `hf-safety data build --config SPEC.yaml` runs one, and a recipe's
`dataset_name: SPEC.yaml` trains on what it builds.

```yaml
# One source
source: {builder: pku-saferlhf, source: PKU-Alignment/PKU-SafeRLHF, split: train, both_safe: drop}

# The DeRTa mix: harmful pairs + helpful rows (text rows are made conversational when the other side is)
harmful: {builder: pku-saferlhf, num_rows: 3000, both_safe: drop}
helpful: {builder: messages, source: HuggingFaceH4/ultrachat_200k, split: train_sft, num_rows: 20000}
harmful_ratio: null   # null: every row of both (after their num_rows)
seed: 42
```
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset

from .sources import (
    SourceReport,
    build_derta_mix,
    from_beavertails,
    from_hh_rlhf,
    from_messages,
    from_pku_saferlhf,
    from_seas_seed_pool,
)


BUILDERS = {
    "pku-saferlhf": from_pku_saferlhf,
    "beavertails": from_beavertails,
    "hh-rlhf": from_hh_rlhf,
    "seas-seeds": from_seas_seed_pool,
    "messages": from_messages,
}


def _builder_options(builder: str) -> dict[str, inspect.Parameter]:
    """The keyword options of a builder beyond `source`/`split` (e.g. `both_safe`, `data_dir`, `skip_invalid_rows`)."""
    parameters = inspect.signature(BUILDERS[builder]).parameters
    return {name: p for name, p in parameters.items() if name not in ("source", "split")}


@dataclass
class SourceSpec:
    """
    One source to build: `builder` (one of `BUILDERS`), `source` (a Hub id or a local data file; default: the
    builder's Hub id), `split` (default: the builder's), `num_rows` (keep that many rows, drawn after a seeded
    shuffle; None: all), and the builder's own `options` (e.g. `{"both_safe": "drop"}`).
    """

    builder: str
    source: str | None = None
    split: str | None = None
    num_rows: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.builder not in BUILDERS:
            raise ValueError(f"unknown builder {self.builder!r}; one of {sorted(BUILDERS)}")
        unknown = set(self.options) - set(_builder_options(self.builder))
        if unknown:
            raise ValueError(
                f"builder {self.builder!r} has no option {sorted(unknown)}; its options: "
                f"{sorted(_builder_options(self.builder))}"
            )
        if self.num_rows is not None and self.num_rows < 1:
            raise ValueError(f"{self.builder}: num_rows must be >= 1, got {self.num_rows}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> SourceSpec:
        if not isinstance(data, dict) or "builder" not in data:
            raise ValueError(f"{where}: expected a mapping with a `builder` key, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)} - {"options"}
        options = {**data.get("options", {}), **{k: v for k, v in data.items() if k not in known | {"options"}}}
        return cls(**{k: v for k, v in data.items() if k in known}, options=options)

    def describe(self) -> dict[str, Any]:
        """What the card and the report say of this source: builder, source, split, rows kept, options."""
        defaults = _builder_options(self.builder)
        source = self.source or inspect.signature(BUILDERS[self.builder]).parameters["source"].default
        split = self.split or inspect.signature(BUILDERS[self.builder]).parameters["split"].default
        options = {name: self.options.get(name, p.default) for name, p in defaults.items()}
        return {"builder": self.builder, "source": source, "split": split, "num_rows": self.num_rows, **options}


@dataclass
class DataBuildSpec:
    """
    A data build: either one `source`, or the DeRTa training mix of `harmful` (preference pairs) and `helpful`
    (benign rows) with `harmful_ratio` and `num_rows` as in [`build_derta_mix`]. `seed` drives every shuffle.
    """

    source: SourceSpec | None = None
    harmful: SourceSpec | None = None
    helpful: SourceSpec | None = None
    harmful_ratio: float | None = None
    num_rows: int | None = None
    seed: int = 0

    def __post_init__(self):
        mix = self.harmful is not None or self.helpful is not None
        if mix == (self.source is not None) or (mix and (self.harmful is None or self.helpful is None)):
            raise ValueError("a data build spec has either `source`, or both `harmful` and `helpful` (a DeRTa mix)")
        if not mix and (self.harmful_ratio is not None or self.num_rows is not None):
            raise ValueError("`harmful_ratio`/`num_rows` are for a mix; for one source set `source.num_rows`")

    @property
    def is_mix(self) -> bool:
        return self.source is None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataBuildSpec:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown keys in the data build spec: {sorted(unknown)}")
        sources = {k: SourceSpec.from_dict(data[k], k) for k in ("source", "harmful", "helpful") if data.get(k)}
        return cls(**{**data, **sources})

    @classmethod
    def load(cls, path: str | Path) -> DataBuildSpec:
        """Reads a YAML spec."""
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


@dataclass
class BuildResult:
    """A built dataset, the [`SourceReport`] of each source, and the spec it came from."""

    dataset: Dataset
    reports: dict[str, SourceReport]
    spec: DataBuildSpec

    @property
    def num_harmful(self) -> int:
        return sum(self.dataset["is_harmful"]) if "is_harmful" in self.dataset.column_names else 0

    def summary(self) -> str:
        lines = [str(report) for report in self.reports.values()]
        lines.append(f"built {len(self.dataset)} rows ({self.num_harmful} harmful)")
        return "\n".join(lines)


def is_conversational(dataset: Dataset) -> bool:
    """Whether the rows are chat messages (a `messages` column, or a `prompt` of messages)."""
    if "messages" in dataset.column_names:
        return True
    prompt = dataset.features.get("prompt")
    return prompt is not None and not (hasattr(prompt, "dtype") and prompt.dtype == "string")


def to_conversational(dataset: Dataset) -> Dataset:
    """Text preference rows as conversational ones: `prompt` -> one user message, `chosen`/`rejected` -> one
    assistant message each (None stays None: a benign row)."""

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        out = {"prompt": [{"role": "user", "content": row["prompt"]}]}
        for name in ("chosen", "rejected"):
            out[name] = None if row[name] is None else [{"role": "assistant", "content": row[name]}]
        return out

    return dataset.map(convert, desc="to conversational")


def _build_source(spec: SourceSpec, seed: int) -> tuple[Dataset, SourceReport]:
    kwargs = {k: v for k, v in (("source", spec.source), ("split", spec.split)) if v is not None}
    dataset, report = BUILDERS[spec.builder](**kwargs, **spec.options)
    if spec.num_rows is not None:
        if spec.num_rows > len(dataset):
            raise ValueError(f"{report.source}: num_rows={spec.num_rows} but the builder made {len(dataset)} rows")
        dataset = dataset.shuffle(seed=seed).select(range(spec.num_rows))
    return dataset, report


def build(spec: DataBuildSpec) -> BuildResult:
    """Runs a data build spec."""
    if not spec.is_mix:
        dataset, report = _build_source(spec.source, spec.seed)
        if "rejected" in dataset.column_names:  # preference rows: marked as the mix marks them
            dataset = dataset.add_column("is_harmful", [r is not None for r in dataset["rejected"]])
        return BuildResult(dataset, {"source": report}, spec)
    harmful, harmful_report = _build_source(spec.harmful, spec.seed)
    helpful, helpful_report = _build_source(spec.helpful, spec.seed)
    if is_conversational(harmful) != is_conversational(helpful):
        harmful, helpful = (d if is_conversational(d) else to_conversational(d) for d in (harmful, helpful))
    mix = build_derta_mix(harmful, helpful, harmful_ratio=spec.harmful_ratio, num_rows=spec.num_rows, seed=spec.seed)
    return BuildResult(mix, {"harmful": harmful_report, "helpful": helpful_report}, spec)


def build_from_spec(spec: str | Path | DataBuildSpec) -> Dataset:
    """The dataset a spec (a YAML path or a [`DataBuildSpec`]) builds; what `load_rows("spec.yaml")` returns."""
    result = build(spec if isinstance(spec, DataBuildSpec) else DataBuildSpec.load(spec))
    return result.dataset
