"""The data contract shared by every method: validation with row/field errors, tokenization, the refusal token."""

from .refusal import refusal_token_from_data, refusal_token_id
from .schema import InvalidRowError, PreferenceRow, SkipReport, check_row
from .tokenize import (
    TOKENIZED_COLUMNS,
    EmptyDatasetError,
    fit_to_max_length,
    prepare_preference_dataset,
    sft_rows_to_contract,
    tokenize_row,
    word_start_positions,
)


__all__ = [
    "EmptyDatasetError",
    "InvalidRowError",
    "PreferenceRow",
    "SkipReport",
    "TOKENIZED_COLUMNS",
    "check_row",
    "fit_to_max_length",
    "prepare_preference_dataset",
    "refusal_token_from_data",
    "refusal_token_id",
    "sft_rows_to_contract",
    "tokenize_row",
    "word_start_positions",
]
