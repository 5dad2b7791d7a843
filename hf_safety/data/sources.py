"""Builders that turn the public safety datasets into rows of the data contract.

Each builder takes a Hub id (loaded with `datasets.load_dataset(id, split=...)`) or a `datasets.Dataset` already
loaded in the source's published schema, and returns the rows of the data contract (TRL's preference format:
`prompt`, `chosen` = the safe answer, `rejected` = the harmful answer or None for a benign row) with a
[`SourceReport`] that counts what became of every source row. A malformed source row raises one
[`InvalidRowError`] naming the row (its index in the source) and the field; with `skip_invalid_rows=True` it is
skipped and listed in the report instead.

| builder | source | rows |
|---|---|---|
| [`from_pku_saferlhf`] | `PKU-Alignment/PKU-SafeRLHF` | one safe + one unsafe response: a harmful pair; both safe: benign |
| [`from_beavertails`] | `PKU-Alignment/BeaverTails` | a safe and an unsafe response to the same prompt: a harmful pair |
| [`from_hh_rlhf`] | `Anthropic/hh-rlhf` (`harmless-base`) | conversational pairs: the shared turns, two final answers |
| [`from_seas_seed_pool`] | `diaomuxi/SEAS` | `prompt`, `category` for `hf_safety.seas.SeedPool` |
| [`from_messages`] | any `messages` dataset | benign conversational rows |
| [`build_derta_mix`] | the above | harmful and benign rows at a ratio, shuffled, with `is_harmful` |
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, Features, List, Value

from .loading import DATA_FILE_BUILDERS, load_rows
from .schema import InvalidRowError, check_row
from .schema import text_field as _text


__all__ = [
    "SourceReport",
    "build_derta_mix",
    "from_beavertails",
    "from_hh_rlhf",
    "from_messages",
    "from_pku_saferlhf",
    "from_seas_seed_pool",
]

_TEXT_FEATURES = Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string")})
_MESSAGE = {"role": Value("string"), "content": Value("string")}
_CONVERSATIONAL_FEATURES = Features({"prompt": List(_MESSAGE), "chosen": List(_MESSAGE), "rejected": List(_MESSAGE)})
MESSAGE_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class SourceReport:
    """
    What a builder did with its source: `num_rows` source rows read, `num_output` rows built (`num_harmful` pairs
    and `num_benign` benign rows), `counts` per documented case (e.g. `"both_unsafe_dropped"`), and the malformed
    rows skipped with `skip_invalid_rows=True` (each row's index in the source, field and reason).
    """

    source: str
    num_rows: int = 0
    num_harmful: int = 0
    num_benign: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def num_output(self) -> int:
        return self.num_harmful + self.num_benign

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def count(self, case: str, n: int = 1) -> None:
        self.counts[case] = self.counts.get(case, 0) + n

    def __str__(self) -> str:
        text = (
            f"{self.source}: {self.num_rows} source rows -> {self.num_output} rows "
            f"({self.num_harmful} harmful, {self.num_benign} benign); {self.counts}"
        )
        if self.skipped:
            first = "; ".join(f"row {r}, field '{f}': {why}" for r, f, why in self.skipped[:5])
            more = f" (+{self.num_skipped - 5} more)" if self.num_skipped > 5 else ""
            text += f"; skipped {self.num_skipped} malformed rows: {first}{more}"
        return text


def _load(source: str | Dataset, split: str, label: str, **load_kwargs: Any) -> tuple[Dataset, str]:
    """A `Dataset` as given, or `load_dataset(source, split=split, **load_kwargs)`; and a name for the report."""
    if isinstance(source, Dataset):
        return source, label
    if isinstance(source, str):
        if source.endswith(tuple(DATA_FILE_BUILDERS)):  # a local file in the source's schema: the one split it holds
            return load_rows(source, split), f"{source} ({split})"
        loaded = load_rows(source, split, **{k: v for k, v in load_kwargs.items() if v is not None})
        return loaded, f"{source} ({split})"
    raise TypeError(f"source must be a Hub dataset id or a datasets.Dataset, got {type(source).__name__}")


def _require_columns(dataset: Dataset, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{name}: the source needs the columns {list(columns)}; missing {missing}, got {dataset.column_names}"
        )


def _bool(example: dict[str, Any], row: int, name: str) -> bool:
    value = example.get(name)
    if value is None:
        raise InvalidRowError(row, name, "missing")
    if not isinstance(value, bool):
        raise InvalidRowError(row, name, f"expected a bool, got {value!r}")
    return value


def _each_row(
    dataset: Dataset,
    report: SourceReport,
    skip_invalid_rows: bool,
    build: Callable[[dict[str, Any], int], Any],
    columns: tuple[str, ...] | None = None,
) -> list[Any]:
    """Applies `build` to every row; a malformed row raises, or with `skip_invalid_rows` is skipped and reported."""
    results = []
    if columns is not None:  # decode only the columns used (not, e.g., the nested harm-category dicts)
        dataset = dataset.select_columns([c for c in columns if c in dataset.column_names])
    for index, example in enumerate(dataset):
        report.num_rows += 1
        try:
            results.append(build(example, index))
        except InvalidRowError as err:
            if not skip_invalid_rows:
                raise
            report.skipped.append((err.row, err.field, err.reason))
            report.count("skipped")
    return results


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def from_pku_saferlhf(
    source: str | Dataset = "PKU-Alignment/PKU-SafeRLHF",
    split: str = "train",
    *,
    name: str | None = None,
    both_safe: str = "benign",
    both_unsafe: str = "drop",
    skip_invalid_rows: bool = False,
) -> tuple[Dataset, SourceReport]:
    """
    Builds preference rows from [PKU-SafeRLHF](https://huggingface.co/datasets/PKU-Alignment/PKU-SafeRLHF).

    Each source row is a prompt with two responses and their safety labels (columns `prompt`, `response_0`,
    `response_1`, `is_response_0_safe`, `is_response_1_safe`, `better_response_id`, `safer_response_id`; the others,
    such as `response_0_harm_category`, `response_0_severity_level` or `prompt_source`, are not used). Mapping:

    - one response safe, the other unsafe (per `is_response_*_safe`): a harmful pair, `chosen` = the safe response,
      `rejected` = the unsafe one (counted as `"one_safe"`);
    - both safe: with `both_safe="benign"` (default) a benign row, `chosen` = the more helpful response per
      `better_response_id`, `rejected` = None (`"both_safe_benign"`); with `both_safe="drop"` the row is dropped
      (`"both_safe_dropped"`). `safer_response_id` is not used: between two safe responses it says nothing a
      refusal-trained model needs;
    - both unsafe: dropped (`"both_unsafe_dropped"`): there is no safe answer to train on. `"drop"` is the only
      value of `both_unsafe` for now.

    Args:
        source: a Hub dataset id, loaded with `datasets.load_dataset(source, split=split, name=name)`, or a
            `datasets.Dataset` in the published schema.
        split: the split to load (`"train"` or `"test"`).
        name: the Hub config (e.g. `"alpaca3-8b"`); None loads the default config (all three generators).
        both_safe: `"benign"` or `"drop"`, for rows whose two responses are both safe.
        both_unsafe: `"drop"`, for rows whose two responses are both unsafe.
        skip_invalid_rows: skip malformed rows (reported) instead of raising.

    Returns:
        `(dataset, report)`: a text dataset with columns `prompt`, `chosen`, `rejected`, and a [`SourceReport`].

    Raises:
        [`InvalidRowError`]: a malformed row (a missing or non-boolean `is_response_0_safe`, an empty response, a
            `better_response_id` other than 0 or 1 where it is used), naming the row and the field.
    """
    _check_choice("both_safe", both_safe, ("benign", "drop"))
    _check_choice("both_unsafe", both_unsafe, ("drop",))
    dataset, label = _load(source, split, "PKU-SafeRLHF", name=name)
    columns = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe")
    _require_columns(dataset, columns, label)
    report = SourceReport(source=label)

    def build(example: dict[str, Any], row: int) -> tuple[str, dict[str, Any] | None]:
        prompt = _text(example, row, "prompt")
        responses = [_text(example, row, "response_0"), _text(example, row, "response_1")]
        safe = [_bool(example, row, "is_response_0_safe"), _bool(example, row, "is_response_1_safe")]
        if safe[0] != safe[1]:
            good = 0 if safe[0] else 1
            return "one_safe", {"prompt": prompt, "chosen": responses[good], "rejected": responses[1 - good]}
        if not safe[0]:
            return "both_unsafe_dropped", None
        if both_safe == "drop":
            return "both_safe_dropped", None
        better = example.get("better_response_id")
        if better not in (0, 1) or isinstance(better, bool):
            raise InvalidRowError(row, "better_response_id", f"expected 0 or 1, got {better!r}")
        return "both_safe_benign", {"prompt": prompt, "chosen": responses[better], "rejected": None}

    used = (*columns, "better_response_id")
    return _finish(_each_row(dataset, report, skip_invalid_rows, build, used), report, _TEXT_FEATURES)


def _finish(
    built: list[tuple[str, dict[str, Any] | None]], report: SourceReport, features: Features
) -> tuple[Dataset, SourceReport]:
    rows = []
    for case, out in built:
        report.count(case)
        if out is not None:
            rows.append(out)
            if out["rejected"] is None:
                report.num_benign += 1
            else:
                report.num_harmful += 1
    columns = {name: [r[name] for r in rows] for name in features}
    return Dataset.from_dict(columns, features=features), report


def from_beavertails(
    source: str | Dataset = "PKU-Alignment/BeaverTails",
    split: str = "330k_train",
    *,
    only_safe: str = "drop",
    skip_invalid_rows: bool = False,
) -> tuple[Dataset, SourceReport]:
    """
    Builds preference rows from [BeaverTails](https://huggingface.co/datasets/PKU-Alignment/BeaverTails).

    Each source row is one question-answer pair (columns `prompt`, `response`, `category`: a dict of 14 harm
    categories, `is_safe`: bool). Rows are grouped by their exact `prompt` string, in the order prompts first appear.
    Mapping, per prompt:

    - at least one safe and one unsafe response: one harmful pair, `chosen` = the first safe response, `rejected` =
      the first unsafe response (source order, so the result is deterministic; counted as `"paired"`); the other
      responses to that prompt are not used;
    - only safe responses: dropped by default (`"only_safe_dropped"`), or with `only_safe="benign"` one benign row
      with `chosen` = the first safe response (`"only_safe_benign"`);
    - only unsafe responses: dropped (`"only_unsafe_dropped"`): there is no safe answer to train on.

    `category` is not used. Counts in the report are per prompt, except `"skipped"` (per source row).

    Args:
        source: a Hub dataset id, loaded with `datasets.load_dataset(source, split=split)`, or a `datasets.Dataset`
            in the published schema.
        split: `"330k_train"`, `"330k_test"`, `"30k_train"` or `"30k_test"`.
        only_safe: `"drop"` or `"benign"`, for prompts whose responses are all safe.
        skip_invalid_rows: skip malformed rows (reported) instead of raising.

    Returns:
        `(dataset, report)`: a text dataset with columns `prompt`, `chosen`, `rejected`, and a [`SourceReport`].

    Raises:
        [`InvalidRowError`]: a malformed row (a missing or non-boolean `is_safe`, an empty `prompt` or `response`),
            naming the row and the field.
    """
    _check_choice("only_safe", only_safe, ("drop", "benign"))
    dataset, label = _load(source, split, "BeaverTails")
    _require_columns(dataset, ("prompt", "response", "is_safe"), label)
    report = SourceReport(source=label)

    def read(example: dict[str, Any], row: int) -> tuple[str, str, bool]:
        return _text(example, row, "prompt"), _text(example, row, "response"), _bool(example, row, "is_safe")

    first: dict[str, dict[bool, str]] = {}
    used = ("prompt", "response", "is_safe")
    for prompt, response, is_safe in _each_row(dataset, report, skip_invalid_rows, read, used):
        first.setdefault(prompt, {}).setdefault(is_safe, response)
    built: list[tuple[str, dict[str, Any] | None]] = []
    for prompt, by_label in first.items():
        if True in by_label and False in by_label:
            built.append(("paired", {"prompt": prompt, "chosen": by_label[True], "rejected": by_label[False]}))
        elif False in by_label:
            built.append(("only_unsafe_dropped", None))
        elif only_safe == "benign":
            built.append(("only_safe_benign", {"prompt": prompt, "chosen": by_label[True], "rejected": None}))
        else:
            built.append(("only_safe_dropped", None))
    return _finish(built, report, _TEXT_FEATURES)


_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def split_hh_transcript(transcript: str, row: int, name: str) -> tuple[list[dict[str, str]], str]:
    """
    Splits an hh-rlhf transcript (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`) into the turns before its final
    Assistant turn (chat messages, roles `user`/`assistant`) and the final Assistant answer.

    Raises:
        [`InvalidRowError`]: text before the first turn, no turn at all, no final Assistant turn, an empty final
            answer, or nothing before it; naming `row` and the field `name`.
    """
    if not isinstance(transcript, str) or not transcript.strip():
        raise InvalidRowError(row, name, "missing or empty transcript")
    parts = _TURN.split(transcript if transcript.startswith("\n\n") else "\n\n" + transcript.lstrip())
    if parts[0].strip():
        raise InvalidRowError(row, name, f"text before the first 'Human:' turn: {parts[0][:40]!r}")
    turns = [{"role": _ROLES[role], "content": text.strip()} for role, text in zip(parts[1::2], parts[2::2])]
    if not turns:
        raise InvalidRowError(row, name, "no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    if turns[-1]["role"] != "assistant":
        raise InvalidRowError(row, name, "no final Assistant turn (the transcript ends with a Human turn)")
    if not turns[-1]["content"]:
        raise InvalidRowError(row, name, "the final Assistant turn is empty")
    if len(turns) < 2:
        raise InvalidRowError(row, name, "no Human turn before the final Assistant turn")
    return turns[:-1], turns[-1]["content"]


def from_hh_rlhf(
    source: str | Dataset = "Anthropic/hh-rlhf",
    data_dir: str | None = "harmless-base",
    split: str = "train",
    *,
    skip_invalid_rows: bool = False,
) -> tuple[Dataset, SourceReport]:
    """
    Builds conversational preference rows from [hh-rlhf](https://huggingface.co/datasets/Anthropic/hh-rlhf).

    Each source row holds two whole transcripts, `chosen` and `rejected` (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`),
    that share every turn but the final Assistant answer. Mapping: `prompt` = the shared turns before the final
    Assistant turn, as chat messages (`Human` -> `user`, `Assistant` -> `assistant`, contents stripped); `chosen` /
    `rejected` = the final answers of the two transcripts, each as a one-message assistant list. In `harmless-base`
    the chosen transcript is the one annotators found more harmless, so every row is a harmful pair (the rejected
    answer is the less harmless one, not always an outright harmful answer). The `helpful-*` subsets load the same
    way, but their pairs rank helpfulness, not safety.

    Args:
        source: a Hub dataset id, loaded with `datasets.load_dataset(source, data_dir=data_dir, split=split)`, or a
            `datasets.Dataset` in the published schema (then `data_dir` is not used).
        data_dir: the subset (`"harmless-base"`; None for all subsets together).
        split: `"train"` or `"test"`.
        skip_invalid_rows: skip malformed rows (reported) instead of raising.

    Returns:
        `(dataset, report)`: a conversational dataset with columns `prompt`, `chosen`, `rejected`, and a
        [`SourceReport`] (every row built is counted as `"paired"`).

    Raises:
        [`InvalidRowError`]: a transcript with no final Assistant turn or an empty final answer (field `chosen` or
            `rejected`), or two transcripts whose turns before the final answer differ (field `rejected`), naming
            the row.
    """
    dataset, label = _load(source, split, "hh-rlhf", data_dir=data_dir)
    _require_columns(dataset, ("chosen", "rejected"), label)
    report = SourceReport(source=label if data_dir is None or isinstance(source, Dataset) else f"{label} {data_dir}")

    def build(example: dict[str, Any], row: int) -> tuple[str, dict[str, Any]]:
        prompt, chosen = split_hh_transcript(example.get("chosen"), row, "chosen")
        rejected_prompt, rejected = split_hh_transcript(example.get("rejected"), row, "rejected")
        if rejected_prompt != prompt:
            raise InvalidRowError(row, "rejected", "the turns before the final answer differ from those of `chosen`")
        return "paired", {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }

    return _finish(_each_row(dataset, report, skip_invalid_rows, build), report, _CONVERSATIONAL_FEATURES)


def from_seas_seed_pool(
    source: str | Dataset = "diaomuxi/SEAS",
    split: str = "train",
    *,
    skip_invalid_rows: bool = False,
) -> tuple[Dataset, SourceReport]:
    """
    Builds the SEAS seed pool (`prompt`, `category`) for [`hf_safety.seas.SeedPool`] from
    [SEAS](https://huggingface.co/datasets/diaomuxi/SEAS) (`SEAS-Train.jsonl` / `SEAS-Test.jsonl`).

    Mapping: each source row's `prompt` and `category` (its one type: a risk category or an attack style, e.g.
    `Role_Play`) are kept as they are; both must be non-empty strings. These are red-team seeds, not preference
    rows: the report counts every kept row as `"seed"` (not as harmful or benign).

    Args:
        source: a Hub dataset id, loaded with `datasets.load_dataset(source, split=split)`, or a `datasets.Dataset`.
        split: `"train"` or `"test"`.
        skip_invalid_rows: skip malformed rows (reported) instead of raising.

    Returns:
        `(dataset, report)`: a dataset with columns `prompt`, `category`, and a [`SourceReport`].

    Raises:
        [`InvalidRowError`]: a missing or empty `prompt` or `category`, naming the row and the field.
    """
    dataset, label = _load(source, split, "SEAS")
    _require_columns(dataset, ("prompt", "category"), label)
    report = SourceReport(source=label)

    def build(example: dict[str, Any], row: int) -> dict[str, str]:
        return {"prompt": _text(example, row, "prompt"), "category": _text(example, row, "category")}

    rows = _each_row(dataset, report, skip_invalid_rows, build)
    report.count("seed", len(rows))
    features = Features({"prompt": Value("string"), "category": Value("string")})
    return Dataset.from_dict({c: [r[c] for r in rows] for c in features}, features=features), report


def from_messages(
    source: str | Dataset,
    split: str = "train",
    *,
    skip_invalid_rows: bool = False,
) -> tuple[Dataset, SourceReport]:
    """
    Builds benign conversational rows from helpfulness data with a `messages` column (chat messages with `role`
    and `content`, e.g. `HuggingFaceH4/ultrachat_200k`'s `train_sft` split).

    Mapping: the `messages` column is kept as it is (with `tools` and `chat_template_kwargs` when the source has
    them); other columns are dropped. Each row is checked as the data contract checks a `messages` row (a user turn
    followed by a non-empty assistant message), and every role must be one of `system`, `user`, `assistant`,
    `tool`. Rows are benign (`"benign"`).

    Args:
        source: a Hub dataset id, loaded with `datasets.load_dataset(source, split=split)`, or a `datasets.Dataset`.
        split: the split to load.
        skip_invalid_rows: skip malformed rows (reported) instead of raising.

    Returns:
        `(dataset, report)`: the dataset with its `messages` column, and a [`SourceReport`].

    Raises:
        [`InvalidRowError`]: a row whose `messages` is missing, empty, malformed or has an unknown role.
    """
    dataset, label = _load(source, split, "messages")
    _require_columns(dataset, ("messages",), label)
    keep = [c for c in ("messages", "tools", "chat_template_kwargs") if c in dataset.column_names]
    report = SourceReport(source=label)

    def build(example: dict[str, Any], row: int) -> int:
        messages = example.get("messages")
        check_row({"messages": messages}, row)
        for i, message in enumerate(messages):
            if message["role"] not in MESSAGE_ROLES:
                raise InvalidRowError(
                    row, "messages", f"message {i} has role {message['role']!r}, not one of {MESSAGE_ROLES}"
                )
        return row

    kept = _each_row(dataset.select_columns(keep), report, skip_invalid_rows, build)
    report.count("benign", len(kept))
    report.num_benign = len(kept)
    out = dataset.select_columns(keep)
    if len(kept) != len(dataset):
        out = out.select(kept)
    return out, report


def build_derta_mix(
    harmful: Dataset,
    helpful: Dataset,
    *,
    harmful_ratio: float | None = None,
    num_rows: int | None = None,
    seed: int = 0,
) -> Dataset:
    """
    Builds a DeRTa training mix: rows of `harmful` (preference pairs) and `helpful` (benign rows), shuffled
    together, with an `is_harmful` column.

    The DeRTa reference data (`RobustNLP/DeRTa`, `llama_derta.json`) is a helpfulness set plus 3k harmful rows, each
    used twice (3k RTO rows and 3k harmful-prefix rows); `DeRTaTrainer` builds both objectives from one preference
    row, so the equivalent mix is the helpfulness rows plus 3k harmful pairs: `build_derta_mix(harmful.select(
    range(3000)), helpful)`. The paper's helpfulness set size is not restated here (not verified).

    Sizes:

    - `harmful_ratio=None` and `num_rows=None`: every row of both datasets (the reference's shape);
    - `harmful_ratio=r`: `round(num_rows * r)` harmful rows and the rest helpful; without `num_rows`, the largest mix
      at that ratio that both datasets can fill without repeating a row;
    - `num_rows` alone: the ratio of the two datasets' sizes.

    Rows are drawn from each dataset after shuffling it with `seed`, then the mix is shuffled with `seed`: the same
    inputs and seed give the same mix. `is_harmful` says whether the row has a `rejected` answer (a benign row of
    `harmful`, such as a both-safe PKU-SafeRLHF row, counts on the harmful side of the ratio but gets
    `is_harmful=False`). Columns are the union of the two datasets' (e.g. `prompt`/`chosen`/`rejected` and
    `messages`), None where a row lacks one; the two must agree on their common columns (both text prompts, or both
    conversational).

    Raises:
        `ValueError`: a ratio outside [0, 1], more rows asked for than a dataset has, or columns of different types.
        [`InvalidRowError`]: a row that breaks the data contract (row index in the mix), named with its field.
    """
    if harmful_ratio is not None and not 0 <= harmful_ratio <= 1:
        raise ValueError(f"harmful_ratio must be in [0, 1], got {harmful_ratio}")
    if num_rows is not None and num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}")
    n_harm_avail, n_help_avail = len(harmful), len(helpful)
    if harmful_ratio is None and num_rows is None:
        n_harm, n_help = n_harm_avail, n_help_avail
    else:
        ratio = harmful_ratio if harmful_ratio is not None else n_harm_avail / max(n_harm_avail + n_help_avail, 1)
        if num_rows is None:
            limits = []
            if ratio > 0:
                limits.append(n_harm_avail / ratio)
            if ratio < 1:
                limits.append(n_help_avail / (1 - ratio))
            num_rows = math.floor(min(limits) + 1e-9)
        n_harm = round(num_rows * ratio)
        n_help = num_rows - n_harm
    if n_harm > n_harm_avail or n_help > n_help_avail:
        raise ValueError(
            f"the mix needs {n_harm} harmful and {n_help} helpful rows, but harmful has {n_harm_avail} and helpful "
            f"{n_help_avail} (rows are not repeated; lower num_rows or change harmful_ratio)"
        )
    picked = [
        d.shuffle(seed=seed).select(range(n)) if n < len(d) else d for d, n in ((harmful, n_harm), (helpful, n_help))
    ]
    rows = [*picked[0].to_list(), *picked[1].to_list()]
    random.Random(seed).shuffle(rows)
    columns = list(dict.fromkeys([*harmful.column_names, *helpful.column_names]))
    mixed = []
    for index, row in enumerate(rows):
        full = {c: row.get(c) for c in columns}
        full["is_harmful"] = check_row(full, index).is_harmful
        mixed.append(full)
    try:
        return Dataset.from_list(mixed) if mixed else Dataset.from_dict({c: [] for c in [*columns, "is_harmful"]})
    except Exception as err:  # pyarrow raises its own errors for columns of mixed types
        raise ValueError(
            f"cannot mix these datasets: their common columns hold different types ({err}); convert both to text "
            "or both to conversational rows"
        ) from err
