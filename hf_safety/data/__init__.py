"""The data contract shared by every method: validation with row/field errors, tokenization, the refusal token, and
builders from the public safety datasets (PKU-SafeRLHF, BeaverTails, hh-rlhf, SEAS, `messages` data)."""

from .refusal import refusal_token_from_data, refusal_token_id
from .schema import InvalidRowError, PreferenceRow, SkipReport, check_row
from .sources import (
    SourceReport,
    build_derta_mix,
    from_beavertails,
    from_hh_rlhf,
    from_messages,
    from_pku_saferlhf,
    from_seas_seed_pool,
)
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
    "SourceReport",
    "TOKENIZED_COLUMNS",
    "build_derta_mix",
    "check_row",
    "fit_to_max_length",
    "from_beavertails",
    "from_hh_rlhf",
    "from_messages",
    "from_pku_saferlhf",
    "from_seas_seed_pool",
    "prepare_preference_dataset",
    "refusal_token_from_data",
    "refusal_token_id",
    "sft_rows_to_contract",
    "tokenize_row",
    "word_start_positions",
]
