"""Evaluation suites: lists of prompts (harmful ones to refuse, benign ones to answer) from the Hub, a local file or a
`datasets.Dataset`, read through a column mapping into one row type, [`SuiteRow`].

Known suites (loaded by name; `advbench` and `xstest` are bundled with the package and work offline, the others come
from the Hub through `datasets.load_dataset`):

| name | source | rows | label |
|---|---|---|---|
| `harmbench` | `walledai/HarmBench` (config `standard`), HarmBench standard behaviours | 200 | unsafe |
| `advbench` | bundled copy of AdvBench (MIT, `hf_safety/eval/data/`; upstream of `walledai/AdvBench`): GCG harmful behaviours with "Sure, here is..." targets, works offline | 520 | unsafe |
| `jailbreakbench` | `JailbreakBench/JBB-Behaviors` (config `behaviors`), splits `harmful` and `benign` | 100 + 100 | by split |
| `xstest` | bundled copy of XSTest (CC BY 4.0, `hf_safety/eval/data/`; also `Paul/XSTest`), works offline | 250 safe + 200 unsafe | column |
| `seas` | `diaomuxi/SEAS`, file `SEAS-Test.jsonl` (CC BY-NC 4.0, adversarial prompts) | ~2k | unsafe |

A row's `label` says what the prompt asks for: `"unsafe"` (a harmful request: complying is an attack success) or
`"safe"` (a benign request: refusing it is over-refusal). Rows of a suite without a label column take
`default_label` (`"unsafe"`: a list of harmful prompts is the usual custom suite). A row's `split` names the split it
came from (`"train"` for a single-split suite).

Limits (`load_suite(..., limit=n)`, [`SafetySuite.head`]) keep the first `n` rows of each (split, label) group, in
order, so that a limit never drops a whole split or label: `jailbreakbench` with `limit=10` keeps 10 harmful and 10
benign rows, `xstest` (one split, a label column) 10 safe and 10 unsafe ones.
"""

from __future__ import annotations

import csv
import io
import operator
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..data import InvalidRowError


FIELDS = ("prompt", "behavior", "category", "label", "target", "id")
"""Fields a column mapping can fill: `prompt` (required: text, or a list of chat messages), `behavior` (the request as
the judge should read it, e.g. HarmBench's behaviour string), `category`, `label` (`"safe"`/`"unsafe"`), `target` (a
harmful answer or its opening, e.g. AdvBench's "Sure, here is...", forced by the prefill attack) and `id`."""

LOCAL_FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}

_UNSAFE = {"unsafe", "harmful", "true", "1", "yes"}
_SAFE = {"safe", "benign", "harmless", "unharmful", "false", "0", "no"}


class SuiteError(ValueError):
    """A suite that cannot be loaded: unknown name, missing column, empty dataset, unreachable Hub."""


@dataclass(frozen=True)
class SuiteSpec:
    """
    How to load a known suite.

    Args:
        name: the suite's short name (`load_suite(name)`).
        description: one line for reports.
        column_mapping: field (see [`FIELDS`]) -> column of the source dataset.
        hub_id: Hub dataset id: where the suite is loaded from, or, for a bundled suite, its upstream on the Hub.
        config: Hub dataset config name.
        data_files: file(s) in the Hub repository to load (for repositories without a loading configuration).
        splits: `(split, label)` pairs: each split is loaded and its rows get `label` (None: from the label column).
        bundled: file name under `hf_safety/eval/data/` for a suite shipped with the package (loaded instead of the
            Hub dataset).
        origin: for a bundled suite, where the file was copied from (default: `hub_id`).
        license: the data's license, for reports.
    """

    name: str
    description: str
    column_mapping: dict[str, str]
    hub_id: str | None = None
    config: str | None = None
    data_files: str | None = None
    splits: tuple[tuple[str, str | None], ...] = (("train", "unsafe"),)
    bundled: str | None = None
    origin: str | None = None
    license: str = ""

    @property
    def source(self) -> str:
        if self.bundled:
            return f"hf_safety/eval/data/{self.bundled} (bundled copy of {self.origin or self.hub_id})"
        parts = [self.hub_id or "", f"config={self.config}" if self.config else "", self.data_files or ""]
        return " ".join(p for p in parts if p)


SUITES: dict[str, SuiteSpec] = {
    spec.name: spec
    for spec in (
        SuiteSpec(
            name="harmbench",
            description="HarmBench standard behaviours (harmful requests)",
            column_mapping={"prompt": "prompt", "category": "category"},
            hub_id="walledai/HarmBench",
            config="standard",
            license="MIT",
        ),
        SuiteSpec(
            name="advbench",
            description="AdvBench harmful behaviours with affirmative targets (GCG)",
            column_mapping={"prompt": "goal", "target": "target"},
            hub_id="walledai/AdvBench",
            bundled="advbench_harmful_behaviors.csv",
            origin="llm-attacks/llm-attacks data/advbench/harmful_behaviors.csv",
            license="MIT",
        ),
        SuiteSpec(
            name="jailbreakbench",
            description="JailbreakBench JBB-Behaviors: 100 harmful + 100 matched benign behaviours",
            # `Behavior` is a short label ("Defamation"), not a request: the judge reads `Goal`
            column_mapping={"prompt": "Goal", "target": "Target", "category": "Category"},
            hub_id="JailbreakBench/JBB-Behaviors",
            config="behaviors",
            splits=(("harmful", "unsafe"), ("benign", "safe")),
            license="MIT",
        ),
        SuiteSpec(
            name="xstest",
            description="XSTest over-refusal suite: 250 safe prompts to answer, 200 unsafe contrast prompts to refuse",
            column_mapping={"prompt": "prompt", "category": "type", "label": "label", "id": "id"},
            hub_id="Paul/XSTest",
            splits=(("train", None),),
            bundled="xstest_prompts.csv",
            license="CC BY 4.0",
        ),
        SuiteSpec(
            name="seas",
            description="SEAS test set: adversarial prompts (role play, goal hijacking, ...) by attack type",
            column_mapping={"prompt": "prompt", "category": "category"},
            hub_id="diaomuxi/SEAS",
            data_files="SEAS-Test.jsonl",
            license="CC BY-NC 4.0",
        ),
    )
}


@dataclass
class SuiteRow:
    """
    One prompt of a suite.

    Args:
        prompt: the user request (text), or a list of chat messages ending with the user's turn.
        label: `"unsafe"` (harmful request, should be refused) or `"safe"` (benign request, should be answered).
        behavior: the request as a judge should read it (defaults to the request text).
        category: the suite's category or type of the row.
        target: a harmful answer or its opening, for the prefill attack.
        id: the row's id in its source (defaults to its index).
        index: position in the whole suite as loaded without a limit (kept by [`SafetySuite.select`] and
            [`SafetySuite.head`]).
        split: the split (part) of the source the row came from, e.g. `"harmful"`/`"benign"` for `jailbreakbench`;
            `"train"` for a single-split suite.
    """

    prompt: str | list[dict[str, str]]
    label: str = "unsafe"
    behavior: str | None = None
    category: str | None = None
    target: str | None = None
    id: str | None = None
    index: int = 0
    split: str = "train"

    @property
    def request(self) -> str:
        """The text of the user's request: the prompt, or the last user message of a conversational prompt."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m["content"] for m in self.prompt if m.get("role") == "user"]
        return users[-1] if users else self.prompt[-1]["content"]

    @property
    def judge_prompt(self) -> str:
        """What a judge is shown as the prompt: the behaviour if the suite has one, else the request text."""
        return self.behavior or self.request

    @property
    def is_harmful(self) -> bool:
        return self.label == "unsafe"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SafetySuite:
    """
    A loaded suite: `name`, `rows` ([`SuiteRow`]s) and where they came from (`source`, `column_mapping`, `license`).
    """

    name: str
    rows: list[SuiteRow]
    source: str
    column_mapping: dict[str, str] = field(default_factory=dict)
    description: str = ""
    license: str = ""
    hub_id: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[SuiteRow]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> SuiteRow:
        return self.rows[index]

    @property
    def num_unsafe(self) -> int:
        return sum(row.label == "unsafe" for row in self.rows)

    @property
    def num_safe(self) -> int:
        return sum(row.label == "safe" for row in self.rows)

    @property
    def splits(self) -> dict[str, int]:
        """Number of rows per split, in the order the splits first appear."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.split] = counts.get(row.split, 0) + 1
        return counts

    def select(self, indices) -> SafetySuite:
        """A suite holding the rows at `indices` (positions in `rows`; each row's `index` is kept)."""
        return SafetySuite(
            self.name,
            [self.rows[i] for i in indices],
            self.source,
            dict(self.column_mapping),
            self.description,
            self.license,
            self.hub_id,
        )

    def head(self, n: int) -> SafetySuite:
        """
        A suite holding the first `n` rows of each (split, label) group, in their order: the first `n` rows of each
        split, and of each label within a split that mixes labels (XSTest's single file: `n` safe and `n` unsafe
        rows). Unlike `select(range(n))`, a limit never drops a whole split or label, so a limited suite still
        measures both attack success and over-refusal. `load_suite(..., limit=n)` applies the same rule.

        Raises:
            [`SuiteError`]: `n` is not a positive integer.
        """
        return self.select(_head_positions([(row.split, row.label) for row in self.rows], _check_limit(n)))

    def info(self) -> dict[str, Any]:
        """Where the suite came from, for reports."""
        return {
            "name": self.name,
            "source": self.source,
            "hub_id": self.hub_id,
            "description": self.description,
            "license": self.license,
            "column_mapping": dict(self.column_mapping),
            "num_rows": len(self.rows),
            "num_unsafe": self.num_unsafe,
            "num_safe": self.num_safe,
            "splits": self.splits,
        }


def _check_limit(limit: Any) -> int:
    try:
        value = operator.index(limit)  # ints, numpy ints; not floats
    except TypeError:
        value = 0
    if isinstance(limit, bool) or value < 1:
        raise SuiteError(f"limit must be a positive number of rows, got {limit!r}")
    return value


def _head_positions(groups: list[Any], n: int) -> list[int]:
    """Positions of the first `n` items of each distinct value of `groups`, in order."""
    seen: dict[Any, int] = {}
    positions = []
    for position, group in enumerate(groups):
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= n:
            positions.append(position)
    return positions


def _normalize_label(value: Any, row: int, column: str) -> str:
    if isinstance(value, bool):
        return "unsafe" if value else "safe"
    text = str(value).strip().lower()
    if text in _UNSAFE:
        return "unsafe"
    if text in _SAFE:
        return "safe"
    raise InvalidRowError(row, column, f"label {value!r} is neither 'safe' nor 'unsafe' (nor harmful/benign, 1/0)")


def _text_or_answer(value: Any) -> str | None:
    """A target/behaviour cell as text: a string, or the first assistant message of a message list."""
    if value is None:
        return None
    if isinstance(value, list):
        contents = [
            m.get("content") for m in value if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        ]
        value = contents[0] if contents else None
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _check_prompt(value: Any, row: int, column: str) -> str | list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRowError(row, column, "empty prompt")
        return value
    if isinstance(value, list) and value:
        for i, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
                raise InvalidRowError(row, column, f"message {i} is not a dict with 'role' and string 'content'")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise InvalidRowError(row, column, f"expected a non-empty string or list of chat messages, got {value!r}")


def _resolve_mapping(
    suite: str, columns: list[str], declared: dict[str, str], overrides: dict[str, str] | None
) -> dict[str, str]:
    """The column mapping to use: the declared one (or, for a custom suite, every field that names a column of the
    same name), updated by `overrides`. Raises [`SuiteError`] for unknown fields and missing columns."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise SuiteError(
            f"suite {suite!r}: column_mapping keys must be fields among {list(FIELDS)} (field -> column), "
            f"got {unknown}"
        )
    mapping = dict(declared) if declared else {f: f for f in FIELDS if f in columns}
    mapping.update(overrides)
    if "prompt" not in mapping:
        raise SuiteError(
            f"suite {suite!r}: no 'prompt' column; available columns: {columns}. "
            "Pass column_mapping={'prompt': '<column>'} (CLI: --column-mapping prompt=<column>)."
        )
    for name, column in mapping.items():
        if column not in columns:
            raise SuiteError(
                f"suite {suite!r}: column {column!r} (for field {name!r}) is not in the dataset; available "
                f"columns: {columns}. Pass column_mapping={{{name!r}: '<column>'}} (CLI: --column-mapping "
                f"{name}=<column>)."
            )
    return mapping


def _split_name(dataset: Dataset, split: str | None) -> str:
    """The split a part came from: the one it was loaded as, else the Dataset's own (`"train"` when it has none)."""
    return split or (str(dataset.split) if dataset.split is not None else "train")


def _rows(
    dataset: Dataset,
    mapping: dict[str, str],
    label: str | None,
    default_label: str,
    start: int,
    split: str,
    positions: list[int] | None = None,
) -> list[SuiteRow]:
    """Rows of one part: `positions` (default: all) of `dataset`, the part starting at suite index `start`."""
    positions = list(range(len(dataset))) if positions is None else positions
    selected = dataset if len(positions) == len(dataset) else dataset.select(positions)
    rows = []
    for position, example in zip(positions, selected):
        index = start + position
        prompt = _check_prompt(example[mapping["prompt"]], index, mapping["prompt"])
        if "label" in mapping and label is None:
            row_label = _normalize_label(example[mapping["label"]], index, mapping["label"])
        else:
            row_label = label or default_label
        cell = {name: example[column] for name, column in mapping.items()}
        rows.append(
            SuiteRow(
                prompt=prompt,
                label=row_label,
                behavior=_text_or_answer(cell.get("behavior")),
                category=None if cell.get("category") is None else str(cell["category"]),
                target=_text_or_answer(cell.get("target")),
                id=str(cell["id"]) if cell.get("id") is not None else str(index),
                index=index,
                split=split,
            )
        )
    return rows


def _build(
    name: str,
    parts: list[tuple[Dataset, str | None, str | None]],
    source: str,
    declared: dict[str, str],
    column_mapping: dict[str, str] | None,
    default_label: str,
    limit: int | None,
    **info: Any,
) -> SafetySuite:
    if default_label not in ("safe", "unsafe"):
        raise SuiteError(f"default_label must be 'safe' or 'unsafe', got {default_label!r}")
    if limit is not None:
        limit = _check_limit(limit)
    if not parts or all(len(dataset) == 0 for dataset, _, _ in parts):
        raise SuiteError(f"suite {name!r} is empty: no rows in {source}")
    mapping = _resolve_mapping(name, list(parts[0][0].column_names), declared, column_mapping)
    rows: list[SuiteRow] = []
    start = 0
    for dataset, split, label in parts:
        positions = None
        if limit is not None:
            # the same rule as `SafetySuite.head`: the first `limit` rows of each label of each split
            if "label" in mapping and label is None:
                column = mapping["label"]
                labels = [_normalize_label(v, start + i, column) for i, v in enumerate(dataset[column])]
            else:
                labels = [label or default_label] * len(dataset)
            positions = _head_positions(labels, limit)
        rows += _rows(dataset, mapping, label, default_label, start, _split_name(dataset, split), positions)
        start += len(dataset)
    return SafetySuite(name=name, rows=rows, source=source, column_mapping=mapping, **info)


def _load_local(path: Path) -> Dataset:
    fmt = LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SuiteError(f"unsupported suite file {str(path)!r}: use one of {sorted(LOCAL_FORMATS)}")
    if not path.is_file():
        raise SuiteError(f"suite file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        return Dataset.from_dict({})
    if fmt == "csv":
        return Dataset.from_csv(str(path), keep_in_memory=True)
    if fmt == "parquet":
        return Dataset.from_parquet(str(path), keep_in_memory=True)
    return Dataset.from_json(str(path), keep_in_memory=True)


def _load_hub(spec: SuiteSpec, split: str | None) -> list[tuple[Dataset, str, str | None]]:
    from datasets import load_dataset

    splits = spec.splits
    if split is not None:
        splits = tuple(s for s in spec.splits if s[0] == split) or ((split, spec.splits[0][1]),)
    parts = []
    for split_name, label in splits:
        try:
            dataset = load_dataset(spec.hub_id, spec.config, data_files=spec.data_files, split=split_name)
        except Exception as err:  # offline, gated, renamed: all the same to the user
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            raise SuiteError(
                f"could not load suite {spec.name!r} from the Hub dataset {spec.hub_id!r} "
                f"(config={spec.config!r}, split={split_name!r}): {type(err).__name__}: {err}. "
                + ("HF_HUB_OFFLINE is set, so the Hub cannot be reached. " if offline else "")
                + f"Download it where the Hub is reachable, or pass a local file instead: "
                f"load_suite('path/to/{spec.name}.jsonl', column_mapping={spec.column_mapping!r}) "
                f"(CLI: --suites path/to/{spec.name}.jsonl --column-mapping "
                + " ".join(f"{k}={v}" for k, v in spec.column_mapping.items())
                + "); csv, jsonl, json and parquet files work."
            ) from err
        parts.append((dataset, split_name, label))
    return parts


def _load_bundled(spec: SuiteSpec) -> Dataset:
    text = (resources.files("hf_safety.eval") / "data" / spec.bundled).read_text(encoding="utf-8")
    return Dataset.from_list(list(csv.DictReader(io.StringIO(text))))


def load_suite(
    name_or_path: str | os.PathLike | Dataset,
    column_mapping: dict[str, str] | None = None,
    split: str | None = None,
    limit: int | None = None,
    *,
    name: str | None = None,
    default_label: str = "unsafe",
) -> SafetySuite:
    """
    Loads an evaluation suite.

    Args:
        name_or_path: a known suite name (see [`SUITES`]: `harmbench`, `advbench`, `jailbreakbench`, `xstest`,
            `seas`), a local `.csv`/`.jsonl`/`.json`/`.parquet` file, or a `datasets.Dataset`.
        column_mapping: field -> column (fields: [`FIELDS`]), e.g. `{"prompt": "goal", "target": "target"}`. For a
            known suite it updates the declared mapping; for a custom suite the default maps each field to the column
            of the same name.
        split: for Hub suites, the split to load (default: the suite's splits, e.g. both `harmful` and `benign` for
            `jailbreakbench`).
        limit: keep the first `limit` rows of each split, and of each label within a split that has a label column
            (see [`SafetySuite.head`]): `load_suite("xstest", limit=10)` has 10 safe and 10 unsafe rows.
        name: the suite's name in reports (default: the known name, the file's stem, or `"dataset"`).
        default_label: label of rows when the suite has no label column (`"unsafe"` or `"safe"`).

    Raises:
        [`SuiteError`]: unknown suite name (the message lists the known ones), missing column (names it and the
            available ones), empty dataset, a Hub suite that cannot be downloaded (offline: says how to pass a local
            file). [`~hf_safety.data.InvalidRowError`]: a row with an empty prompt or an unreadable label.
    """
    kwargs = dict(column_mapping=column_mapping, default_label=default_label, limit=limit)
    if isinstance(name_or_path, Dataset):
        suite_name = name or "dataset"
        return _build(suite_name, [(name_or_path, None, None)], "datasets.Dataset", {}, **kwargs)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise SuiteError(
            f"expected a suite name, a file path or a datasets.Dataset, got {type(name_or_path).__name__}"
        )
    text = str(name_or_path)
    path = Path(text)
    if text.lower() in SUITES and not path.is_file():
        spec = SUITES[text.lower()]
        if spec.bundled and split not in (None, *(s for s, _ in spec.splits)):
            raise SuiteError(
                f"suite {spec.name!r} has the split(s) {[s for s, _ in spec.splits]}, got split={split!r}"
            )
        if spec.bundled:
            # a bundled suite is one file: a single split (labelled by the split or the label column)
            parts = [(_load_bundled(spec), *spec.splits[0])]
        else:
            parts = _load_hub(spec, split)
        info = dict(description=spec.description, license=spec.license, hub_id=spec.hub_id)
        return _build(name or spec.name, parts, spec.source, spec.column_mapping, **kwargs, **info)
    if path.suffix.lower() in LOCAL_FORMATS or path.exists():
        return _build(name or path.stem, [(_load_local(path), None, None)], str(path), {}, **kwargs)
    raise SuiteError(
        f"unknown suite {text!r}: known suites are {sorted(SUITES)}; a custom suite is a .csv, .jsonl, .json or "
        ".parquet file (or a datasets.Dataset) with a prompt column"
    )
