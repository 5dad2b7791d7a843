"""Preference pairs for SEAS (Self-Evolving Adversarial Safety, arXiv 2408.02632) from judged red-team records.

A red-team model writes adversarial prompts from a seed prompt, the target answers each several times and a judge
labels every response unsafe (`True`), safe (`False`) or unknown (`None`). From these records we build DPO pairs for
both sides: the red team prefers the adversarial prompt that broke the target most often, the target prefers its safe
response over its unsafe one.

The verdict is read only from the `unsafe` field, never from the response text: the released SEAS code tests
`'safe' in evaluation`, which also matches "unsafe".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from datasets import Dataset, Features, LargeList, List, Sequence, Value, concatenate_datasets
from transformers.utils import logging

from ..data.schema import InvalidRowError, text_field


logger = logging.get_logger(__name__)

REQUIRED_FIELDS = ("seed_prompt", "adversarial_prompt", "response", "unsafe")
OPTIONAL_FIELDS = ("iteration", "category")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")

# Types of the optional columns when they cannot be taken from the records (list input, no values)
_DEFAULT_OPTIONAL_FEATURES = {"iteration": Value("int64"), "category": Value("string")}


def _check_records(records: Dataset | list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Validates the judged records; returns them as dicts of the known fields and the optional columns present."""
    if isinstance(records, Dataset):
        optional = [name for name in OPTIONAL_FIELDS if name in records.column_names]
        # Only the columns we use; a missing required column is reported on row 0 below
        columns = [name for name in (*REQUIRED_FIELDS, *optional) if name in records.column_names]
        rows = records.select_columns(columns).to_list()
    elif isinstance(records, (list, tuple)):
        rows = list(records)
        optional = [name for name in OPTIONAL_FIELDS if any(isinstance(r, dict) and name in r for r in rows)]
    else:
        raise TypeError(f"`records` must be a `datasets.Dataset` or a list of dicts, got {type(records).__name__}")

    checked = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {index}: expected a dict, got {type(row).__name__}")
        for name in ("seed_prompt", "adversarial_prompt"):
            text_field(row, index, name)
        if row.get("response") is None:
            raise InvalidRowError(index, "response", "missing")
        if not isinstance(row["response"], str):
            raise InvalidRowError(index, "response", f"expected a string, got {type(row['response']).__name__}")
        if "unsafe" not in row:
            raise InvalidRowError(index, "unsafe", "missing")
        unsafe = row["unsafe"]
        if isinstance(unsafe, np.bool_):
            unsafe = bool(unsafe)
        # `type(...) is bool`: 1 and 0 are ints, not verdicts
        if unsafe is not None and type(unsafe) is not bool:
            raise InvalidRowError(
                index, "unsafe", f"expected True, False or None (the judge's verdict), got {unsafe!r}"
            )
        checked.append({**{name: row[name] for name in REQUIRED_FIELDS}, "unsafe": unsafe})
        checked[-1].update({name: row.get(name) for name in optional})
    return checked, optional


def _features(
    base: dict[str, Any], optional: list[str], records: Dataset | list, columns: dict[str, list]
) -> Features:
    """Output features: `base` plus the optional columns, typed as in `records` (a Dataset) or from their values."""
    features = dict(base)
    for name in optional:
        if isinstance(records, Dataset):
            features[name] = records.features[name]
        elif any(value is not None for value in columns[name]):
            features[name] = Dataset.from_dict({name: columns[name]}).features[name]
        else:
            features[name] = _DEFAULT_OPTIONAL_FEATURES[name]
    return Features(features)


def _group(rows: list[dict[str, Any]], key) -> dict[Any, list[dict[str, Any]]]:
    """Groups rows by `key(row)`, groups and rows in first-seen order (dicts keep insertion order)."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def build_red_team_pairs(records: Dataset | list[dict[str, Any]]) -> Dataset:
    """
    Builds the red team's preference pairs: for each seed prompt, the adversarial prompt that made the target unsafe
    most often (chosen) against the one that did least often (rejected).

    The unsafe rate of an adversarial prompt is its number of unsafe verdicts over its number of known verdicts
    (`unsafe` True or False); unknown verdicts (`None`) count as neither, and a prompt whose verdicts are all unknown
    has no rate and takes no part. Ties go to the first prompt seen. A seed gives a pair only when the highest and
    lowest rates differ.

    Args:
        records (`datasets.Dataset` or `list[dict]`):
            Judged records, one per response, with `seed_prompt` (`str`), `adversarial_prompt` (`str`), `response`
            (`str`) and `unsafe` (`True`, `False` or `None`). Optional `iteration` and `category` are carried
            through, taken from the seed's first record.

    Returns:
        `datasets.Dataset`: one row per seed with a pair, in first-seen order of the seeds, with columns `prompt` (the
        seed prompt), `chosen`, `rejected` (adversarial prompts), `chosen_unsafe_rate`, `rejected_unsafe_rate`,
        `num_adversarial_prompts` (the seed's prompts with a rate), then `iteration` and `category` when present.

    Raises:
        [`~hf_safety.data.InvalidRowError`]: a record with a missing or malformed field, naming its row and field.
    """
    rows, optional = _check_records(records)
    columns: dict[str, list] = {
        name: []
        for name in (*PAIR_COLUMNS, "chosen_unsafe_rate", "rejected_unsafe_rate", "num_adversarial_prompts", *optional)
    }
    for seed_rows in _group(rows, lambda r: r["seed_prompt"]).values():
        rates = []  # (adversarial prompt, unsafe rate) of the eligible prompts, first-seen order
        for prompt, prompt_rows in _group(seed_rows, lambda r: r["adversarial_prompt"]).items():
            known = [r["unsafe"] for r in prompt_rows if r["unsafe"] is not None]
            if known:
                rates.append((prompt, sum(known) / len(known)))
        if not rates:
            continue
        # max/min return the first of equal items: ties go to the first prompt seen
        chosen = max(rates, key=lambda item: item[1])
        rejected = min(rates, key=lambda item: item[1])
        if chosen[1] == rejected[1]:
            continue
        columns["prompt"].append(seed_rows[0]["seed_prompt"])
        columns["chosen"].append(chosen[0])
        columns["rejected"].append(rejected[0])
        columns["chosen_unsafe_rate"].append(chosen[1])
        columns["rejected_unsafe_rate"].append(rejected[1])
        columns["num_adversarial_prompts"].append(len(rates))
        for name in optional:
            columns[name].append(seed_rows[0][name])

    base = {
        "prompt": Value("string"),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "chosen_unsafe_rate": Value("float64"),
        "rejected_unsafe_rate": Value("float64"),
        "num_adversarial_prompts": Value("int64"),
    }
    return Dataset.from_dict(columns, features=_features(base, optional, records, columns))


def build_target_pairs(records: Dataset | list[dict[str, Any]]) -> Dataset:
    """
    Builds the target's preference pairs: for each adversarial prompt, a safe response (chosen) against an unsafe one
    (rejected).

    The first safe response (`unsafe=False`) and the first unsafe one (`unsafe=True`) are taken; responses with an
    unknown verdict are never used. Prompts without both a safe and an unsafe response give no pair.

    Args:
        records (`datasets.Dataset` or `list[dict]`):
            Judged records, one per response, with `seed_prompt` (`str`), `adversarial_prompt` (`str`), `response`
            (`str`) and `unsafe` (`True`, `False` or `None`). Optional `iteration` and `category` are carried
            through, taken from the adversarial prompt's first record.

    Returns:
        `datasets.Dataset`: one row per adversarial prompt with a pair, in first-seen order, with columns `prompt`
        (the adversarial prompt), `chosen`, `rejected` (responses), `seed_prompt`, then `iteration` and `category`
        when present.

    Raises:
        [`~hf_safety.data.InvalidRowError`]: a record with a missing or malformed field, naming its row and field.
    """
    rows, optional = _check_records(records)
    columns: dict[str, list] = {name: [] for name in (*PAIR_COLUMNS, "seed_prompt", *optional)}
    for prompt, prompt_rows in _group(rows, lambda r: r["adversarial_prompt"]).items():
        safe = next((r["response"] for r in prompt_rows if r["unsafe"] is False), None)
        unsafe = next((r["response"] for r in prompt_rows if r["unsafe"] is True), None)
        if safe is None or unsafe is None:
            continue
        columns["prompt"].append(prompt)
        columns["chosen"].append(safe)
        columns["rejected"].append(unsafe)
        columns["seed_prompt"].append(prompt_rows[0]["seed_prompt"])
        for name in optional:
            columns[name].append(prompt_rows[0][name])

    base = {name: Value("string") for name in (*PAIR_COLUMNS, "seed_prompt")}
    return Dataset.from_dict(columns, features=_features(base, optional, records, columns))


def _format(feature: Any) -> str:
    """'text' for a string column, 'conversational' for a list column, else the feature's repr."""
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "text"
    if isinstance(feature, (list, List, LargeList, Sequence)):
        return "conversational"
    return repr(feature)


def mix_general_data(pairs: Dataset, general: Dataset | None, ratio: float, seed: int = 0) -> Dataset:
    """
    Mixes general preference data into the SEAS pairs, so that the target keeps its general abilities.

    `round(ratio * len(pairs))` rows of `general` are drawn without replacement; if more are asked than `general`
    holds, all are taken and a warning is logged. Both datasets are reduced to `prompt`, `chosen` and `rejected`, which
    must be of the same format (both text or both conversational).

    Args:
        pairs (`datasets.Dataset`):
            The SEAS pairs, with `prompt`, `chosen` and `rejected` columns.
        general (`datasets.Dataset` or `None`):
            General preference data with `prompt`, `chosen` and `rejected` columns. `None` adds nothing.
        ratio (`float`):
            Number of general rows per SEAS pair. `0` adds nothing.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draw from `general` and of the final shuffle.

    Returns:
        `datasets.Dataset`: columns `prompt`, `chosen`, `rejected` and `general` (`True` for the general rows),
        shuffled with `seed`; when nothing is added, `pairs` in its order with `general=False`.

    Raises:
        `ValueError`: a negative `ratio`, a missing column, or datasets of different formats.
    """
    if math.isnan(ratio) or ratio < 0:
        raise ValueError(f"`ratio` must be >= 0, got {ratio}")
    for name, dataset in (("pairs", pairs), ("general", general)):
        missing = [c for c in PAIR_COLUMNS if dataset is not None and c not in dataset.column_names]
        if missing:
            raise ValueError(f"`{name}` lacks the column(s) {missing}; it needs {list(PAIR_COLUMNS)}")

    pairs = pairs.select_columns(list(PAIR_COLUMNS))
    num_general = round(ratio * len(pairs)) if general is not None else 0
    if num_general == 0:
        return pairs.add_column("general", [False] * len(pairs))

    general = general.select_columns(list(PAIR_COLUMNS))
    for column in PAIR_COLUMNS:
        pairs_format, general_format = _format(pairs.features[column]), _format(general.features[column])
        if pairs_format != general_format:
            raise ValueError(
                f"`pairs` and `general` must be of the same format (both text or both conversational), but column "
                f"'{column}' is {pairs_format} in `pairs` and {general_format} in `general`"
            )
    if num_general > len(general):
        logger.warning(
            f"mix_general_data: {num_general} general rows asked (ratio {ratio} x {len(pairs)} pairs), but only "
            f"{len(general)} available; taking all of them."
        )
        num_general = len(general)
    general = general.shuffle(seed=seed).select(range(num_general)).flatten_indices()
    if general.features != pairs.features:
        try:
            general = general.cast(pairs.features)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"`general` could not be cast to the features of `pairs` ({pairs.features}): {error}"
            ) from error

    mixed = concatenate_datasets(
        [pairs.add_column("general", [False] * len(pairs)), general.add_column("general", [True] * len(general))]
    )
    return mixed.shuffle(seed=seed).flatten_indices()


def pair_counts(records: Dataset | list[dict[str, Any]]) -> dict[str, int | float]:
    """
    Counts of judged records, for logging.

    Args:
        records (`datasets.Dataset` or `list[dict]`):
            Judged records, as for [`build_red_team_pairs`].

    Returns:
        `dict`: `num_records`, `num_unknown`, `num_unsafe`, `num_safe`, `unsafe_rate` (unsafe over known verdicts,
        `0.0` when none is known), `num_seeds` (distinct seed prompts) and `num_adversarial_prompts` (distinct
        adversarial prompts).
    """
    rows, _ = _check_records(records)
    num_unsafe = sum(r["unsafe"] is True for r in rows)
    num_safe = sum(r["unsafe"] is False for r in rows)
    return {
        "num_records": len(rows),
        "num_unknown": len(rows) - num_unsafe - num_safe,
        "num_unsafe": num_unsafe,
        "num_safe": num_safe,
        "unsafe_rate": num_unsafe / (num_unsafe + num_safe) if num_unsafe + num_safe else 0.0,
        "num_seeds": len({r["seed_prompt"] for r in rows}),
        "num_adversarial_prompts": len({r["adversarial_prompt"] for r in rows}),
    }
