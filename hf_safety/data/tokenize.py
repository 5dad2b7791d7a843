"""Tokenizing preference rows into the three pieces every method builds its sequences from.

A row becomes `prompt_ids` (for conversational rows: the chat template up to and including the assistant header, as
SFTTrainer builds it with `add_generation_prompt=True`), `chosen_ids` (the safe answer as it follows the prompt in
the assistant turn, with the end-of-turn/EOS token) and `rejected_ids` (the harmful answer as it follows the prompt,
*without* end of turn, empty for benign rows). Pieces are cut on token ids from one tokenization of prompt + answer,
never by re-tokenizing a cut string, so `prompt_ids + chosen_ids` is exactly what SFTTrainer trains on.

A row trained as SFTTrainer trains language-modelling data (a `messages` conversation, or any SFT-format row prepared
by SFTTrainer's own pipeline) has no prompt: `chosen_ids` is the whole sequence and `chosen_labels` its labels (-100
where not trained). `chosen_labels` is empty for the other rows (labels on all of `chosen_ids`).
"""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset, Features, IterableDataset, List, Value
from transformers import PreTrainedTokenizerBase
from trl.data_utils import common_prefix_length

from .schema import InvalidRowError, PreferenceRow, SkipReport, check_row


logger = logging.getLogger(__name__)

TOKENIZED_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
TRUNCATION_MODES = ("keep_start", "keep_end")


class EmptyDatasetError(ValueError):
    """A dataset with no rows at all."""


def _chat_ids(tokenizer: PreTrainedTokenizerBase, messages: list, **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def _continuation(prompt_ids: list[int], full_ids: list[int]) -> tuple[list[int], list[int]]:
    """Splits `full_ids` where it stops agreeing with `prompt_ids` (like SFTTrainer's completion mask)."""
    n = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:n], full_ids[n:]


def tokenize_row(
    row: PreferenceRow,
    tokenizer: PreTrainedTokenizerBase,
    *,
    assistant_only_loss: bool = False,
    chat_template: str | None = None,
) -> dict[str, list[int]]:
    """
    Tokenizes a validated row (see [`check_row`]) into `prompt_ids`, `chosen_ids`, `rejected_ids` and
    `chosen_labels`.

    Text rows are tokenized the way SFTTrainer tokenizes prompt-completion text: `prompt` alone, then
    `prompt + chosen + eos_token` (EOS appended unless already there); the harmful answer as `prompt + rejected`.
    Conversational rows go through the tokenizer's chat template (or `chat_template`), with the row's `tools` and
    `chat_template_kwargs`; the harmful answer is rendered with `continue_final_message=True`, so it carries no
    end-of-turn token. A `messages` row is tokenized whole, as SFTTrainer does: labels on every token, or with
    `assistant_only_loss=True` on the assistant tokens only (the template needs `{% generation %}` markers).
    """
    kwargs: dict[str, Any] = {"tools": row.tools, **(row.chat_template_kwargs or {})}
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    if row.messages is not None:
        out = tokenizer.apply_chat_template(
            row.messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=assistant_only_loss, **kwargs
        )
        ids = list(out["input_ids"])
        labels = ids
        if assistant_only_loss:
            labels = [t if m else -100 for t, m in zip(ids, out["assistant_masks"])]
        return {"prompt_ids": [], "chosen_ids": ids, "rejected_ids": [], "chosen_labels": labels}
    if row.is_conversational:
        prompt_ids = _chat_ids(tokenizer, row.prompt, add_generation_prompt=True, **kwargs)
        prompt_ids, chosen_ids = _continuation(prompt_ids, _chat_ids(tokenizer, row.prompt + row.chosen, **kwargs))
        rejected_ids = []
        if row.rejected is not None:
            rejected_full = _chat_ids(tokenizer, row.prompt + row.rejected, continue_final_message=True, **kwargs)
            rejected_ids = rejected_full[common_prefix_length(prompt_ids, rejected_full) :]
    else:
        eos = tokenizer.eos_token
        chosen = row.chosen if row.chosen.endswith(eos) else row.chosen + eos
        prompt_ids = list(tokenizer(text=row.prompt)["input_ids"])
        prompt_ids, chosen_ids = _continuation(prompt_ids, list(tokenizer(text=row.prompt + chosen)["input_ids"]))
        rejected_ids = []
        if row.rejected is not None:
            rejected_full = list(tokenizer(text=row.prompt + row.rejected)["input_ids"])
            rejected_ids = rejected_full[common_prefix_length(prompt_ids, rejected_full) :]
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids, "chosen_labels": []}


def fit_to_max_length(
    pieces: dict[str, list[int]], max_length: int | None, truncation_mode: str, row: int, field: str
) -> str | None:
    """
    Fits a tokenized row into `max_length` in place, the way SFTTrainer truncates, and says what it cut (None when
    nothing). Rows with a prompt keep the whole prompt with `keep_start` (the safe answer is cut from the right; a
    prompt that fills `max_length` is an error) and the whole safe answer with `keep_end` (the prompt is cut from the
    left). Rows without a prompt (SFT sequences) are cut with the slice SFTTrainer uses; a sequence left without any
    trained token is an error, never a silent drop.

    Raises:
        [`InvalidRowError`]: naming `row` and `field` (`"prompt"`, `"chosen"`, or the SFT row's field).
    """
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    prompt, chosen, labels = pieces["prompt_ids"], pieces["chosen_ids"], pieces.get("chosen_labels") or []
    if max_length is None:
        return None
    if not prompt and labels:  # an SFT sequence
        if len(chosen) > max_length:
            cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
            pieces["chosen_ids"], pieces["chosen_labels"] = chosen[cut], labels[cut]
            if all(label == -100 for label in pieces["chosen_labels"]):
                raise InvalidRowError(
                    row, field, f"no trained token left within max_length={max_length} ({truncation_mode})"
                )
            return f"{len(chosen)} tokens cut to {max_length} ({truncation_mode})"
        return None
    if truncation_mode == "keep_end" and len(prompt) + len(chosen) > max_length:
        if len(chosen) >= max_length:
            raise InvalidRowError(
                row, "chosen", f"the answer alone is {len(chosen)} tokens, max_length is {max_length} (keep_end)"
            )
        pieces["prompt_ids"] = prompt[len(prompt) + len(chosen) - max_length :]
        return f"prompt cut from {len(prompt)} to {len(pieces['prompt_ids'])} tokens (keep_end)"
    if len(prompt) >= max_length:
        raise InvalidRowError(row, "prompt", f"prompt is {len(prompt)} tokens, max_length is {max_length}")
    if len(prompt) + len(chosen) > max_length:
        return f"safe answer cut from {len(chosen)} to {max_length - len(prompt)} tokens (keep_start)"
    return None


def word_start_positions(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """
    Positions `j` (1 <= j < len(ids)) where token `j` begins a new word, i.e. whitespace separates it from token `j-1`
    once decoded. Works for byte-level BPE (`Ġword`), SentencePiece/Metaspace (`▁word`) and word-level vocabularies,
    and lets a harmful answer be cut at a word boundary on token ids.
    """
    starts = []
    for j in range(1, len(ids)):
        left = tokenizer.decode(ids[j - 1 : j])
        pair = tokenizer.decode(ids[j - 1 : j + 1])
        junction = pair[len(left) : len(left) + 1] if pair.startswith(left) else ""
        if junction.isspace() or left[-1:].isspace():
            starts.append(j)
    return starts


_FEATURES = {
    "row_index": Value("int64"),
    **{name: List(Value("int64")) for name in (*TOKENIZED_COLUMNS, "chosen_labels")},
    "_invalid": Value("string"),
    "_truncated": Value("string"),
}


def _first_row(dataset: Dataset | IterableDataset) -> dict[str, Any] | None:
    if isinstance(dataset, Dataset):
        return dataset[0] if len(dataset) else None
    return next(iter(dataset), None)


def prepare_preference_dataset(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None = None,
    skip_invalid_rows: bool = False,
    with_word_starts: bool = False,
    num_proc: int | None = None,
    dataset_name: str = "train",
    truncation_mode: str = "keep_start",
    assistant_only_loss: bool = False,
    chat_template: str | None = None,
) -> tuple[Dataset | IterableDataset, SkipReport]:
    """
    Validates and tokenizes a dataset of the data contract into `row_index`, `prompt_ids`, `chosen_ids`,
    `rejected_ids`, `chosen_labels` (and `rejected_word_starts` when `with_word_starts`).

    A row that breaks the contract, or whose prompt leaves no room under `max_length`, raises one
    [`InvalidRowError`] naming the row and the field; with `skip_invalid_rows=True` such rows are dropped, and the
    returned [`SkipReport`] counts and lists them (it is also logged), with the rows cut to fit `max_length` (see
    [`fit_to_max_length`]) and the numbers of harmful and benign rows. An `IterableDataset` is prepared lazily: rows
    are checked as they stream, with the same errors, and the report fills in as they do.

    Raises:
        [`EmptyDatasetError`]: the dataset has no row.
    """
    if _first_row(dataset) is None:
        raise EmptyDatasetError(f"The {dataset_name} dataset is empty: there is nothing to train on.")
    report = SkipReport(dataset_name=dataset_name)
    streaming = isinstance(dataset, IterableDataset)

    def process(example, index):
        out = {name: [] for name in (*TOKENIZED_COLUMNS, "chosen_labels")}
        out.update(row_index=index, _invalid="", _truncated="")
        if with_word_starts:
            out["rejected_word_starts"] = []
        try:
            row = check_row(example, index)
            out.update(
                tokenize_row(row, tokenizer, assistant_only_loss=assistant_only_loss, chat_template=chat_template)
            )
            field = "messages" if row.messages is not None else "chosen"
            if row.messages is not None and all(label == -100 for label in out["chosen_labels"]):
                raise InvalidRowError(index, "messages", "no assistant token to train on (assistant_only_loss=True)")
            if not out["chosen_ids"]:
                raise InvalidRowError(index, "chosen", "tokenizes to nothing after the prompt")
            out["_truncated"] = fit_to_max_length(out, max_length, truncation_mode, index, field) or ""
            if out["_truncated"]:
                out["_truncated"] = f"{field}\t{out['_truncated']}"
        except InvalidRowError as err:
            if streaming and not skip_invalid_rows:
                raise
            out["_invalid"] = f"{err.field}\t{err.reason}"
            return out
        if with_word_starts:
            out["rejected_word_starts"] = word_start_positions(tokenizer, out["rejected_ids"])
        return out

    # Declared, not inferred: a first writer batch of benign rows only (empty `rejected_ids`) would type the column
    # as list<null> and fail on the first harmful row after it
    features = Features({**_FEATURES, **({"rejected_word_starts": List(Value("int64"))} if with_word_starts else {})})
    map_kwargs: dict[str, Any] = {"with_indices": True, "features": features}
    if streaming:
        columns = list(_first_row(dataset))
        processed = dataset.map(process, remove_columns=columns, **map_kwargs)
        return _stream_with_report(processed, report), report
    processed = dataset.map(
        process,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Validating and tokenizing {dataset_name} dataset",
        **map_kwargs,
    )
    report.num_rows = len(processed)
    invalid = [(i, msg) for i, msg in enumerate(processed["_invalid"]) if msg]
    if invalid:
        index, msg = invalid[0]
        field, reason = msg.split("\t", 1)
        if not skip_invalid_rows:
            more = f" ({len(invalid) - 1} more invalid rows)" if len(invalid) > 1 else ""
            raise InvalidRowError(
                index, field, f"{reason} [{dataset_name} dataset{more}; pass skip_invalid_rows=True to skip them]"
            )
        report.skipped = [(i, *msg.split("\t", 1)) for i, msg in invalid]
        bad = {i for i, _ in invalid}
        processed = processed.filter(lambda _, i: i not in bad, with_indices=True)
        if len(processed) == 0:
            raise ValueError(f"Every row of the {dataset_name} dataset is invalid: {report}")
    report.truncated = [(r, *t.split("\t", 1)) for r, t in zip(processed["row_index"], processed["_truncated"]) if t]
    report.num_harmful = sum(1 for ids in processed["rejected_ids"] if ids)
    report.num_benign = len(processed) - report.num_harmful
    if report.skipped or report.truncated:
        logger.warning(str(report))
    return processed.remove_columns(["_invalid", "_truncated"]), report


def _stream_with_report(processed: IterableDataset, report: SkipReport) -> IterableDataset:
    """Drops the rows marked invalid (`skip_invalid_rows=True`) from a streamed dataset, logging and counting each
    skipped or truncated row in `report` as it streams by."""

    def keep(example: dict[str, Any]) -> bool:
        report.num_rows += 1
        if example["_truncated"]:
            report.truncated.append((example["row_index"], *example["_truncated"].split("\t", 1)))
        if example["_invalid"]:
            field, reason = example["_invalid"].split("\t", 1)
            report.skipped.append((example["row_index"], field, reason))
            logger.warning(
                f"{report.dataset_name} dataset: skipped row {example['row_index']}, field '{field}': {reason}"
            )
            return False
        return True

    return processed.filter(keep).remove_columns(["_invalid", "_truncated"])


def sft_rows_to_contract(
    dataset: Dataset | IterableDataset,
    *,
    max_length: int | None,
    truncation_mode: str = "keep_start",
    skip_invalid_rows: bool = False,
    dataset_name: str = "train",
    field: str = "input_ids",
    num_proc: int | None = None,
) -> tuple[Dataset | IterableDataset, SkipReport]:
    """
    Turns a dataset prepared by SFTTrainer's own pipeline (`input_ids`, `labels`; any SFT format: text,
    prompt-completion, `messages`, ShareGPT `conversations`, pre-tokenized) into benign rows of the data contract:
    no prompt, `chosen_ids` = the sequence, `chosen_labels` = its labels, fitted to `max_length` as SFTTrainer fits
    them, except that a row left with no trained token is an error naming the row and `field` (or, with
    `skip_invalid_rows=True`, a counted and reported skip) where SFTTrainer drops it silently.
    """
    report = SkipReport(dataset_name=dataset_name)
    streaming = isinstance(dataset, IterableDataset)

    def convert(example, index):
        labels = example["labels"] if "labels" in example and example["labels"] is not None else example["input_ids"]
        out = {
            "row_index": index,
            "prompt_ids": [],
            "chosen_ids": list(example["input_ids"]),
            "rejected_ids": [],
            "chosen_labels": list(labels),
            "_invalid": "",
            "_truncated": "",
        }
        try:
            if all(label == -100 for label in out["chosen_labels"]):
                raise InvalidRowError(index, field, "no token to train on")
            cut = fit_to_max_length(out, max_length, truncation_mode, index, field)
            out["_truncated"] = f"{field}\t{cut}" if cut else ""
        except InvalidRowError as err:
            if streaming and not skip_invalid_rows:
                raise
            out["_invalid"] = f"{err.field}\t{err.reason}"
        return out

    columns = list(_first_row(dataset))
    kwargs: dict[str, Any] = {"with_indices": True, "remove_columns": columns, "features": Features(_FEATURES)}
    if streaming:
        return _stream_with_report(dataset.map(convert, **kwargs), report), report
    processed = dataset.map(convert, num_proc=num_proc, desc=f"Checking {dataset_name} dataset", **kwargs)
    report.num_rows = len(processed)
    invalid = [(i, msg) for i, msg in enumerate(processed["_invalid"]) if msg]
    if invalid and not skip_invalid_rows:
        index, msg = invalid[0]
        field_name, reason = msg.split("\t", 1)
        more = f" ({len(invalid) - 1} more)" if len(invalid) > 1 else ""
        raise InvalidRowError(
            index, field_name, f"{reason} [{dataset_name} dataset{more}; pass skip_invalid_rows=True to skip them]"
        )
    if invalid:
        report.skipped = [(i, *msg.split("\t", 1)) for i, msg in invalid]
        bad = {i for i, _ in invalid}
        processed = processed.filter(lambda _, i: i not in bad, with_indices=True)
    report.truncated = [(r, *t.split("\t", 1)) for r, t in zip(processed["row_index"], processed["_truncated"]) if t]
    report.num_harmful, report.num_benign = 0, len(processed)
    if report.skipped or report.truncated:
        logger.warning(str(report))
    return processed.remove_columns(["_invalid", "_truncated"]), report
