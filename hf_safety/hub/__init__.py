"""Publishing to the Hub: model and dataset cards (rendered from the templates in `hf_safety/model_cards/`), and
pushing models (LoRA adapter or merged) and datasets (harmful data private by default) through a staging folder."""

from .cards import add_eval_report, derta_mix_dataset_card, derta_model_card, seas_dataset_card, seas_model_card
from .metadata import framework_versions, hyperparameters_from_args
from .push import (
    HubPushError,
    HubPushResult,
    StagedUpload,
    is_offline,
    merge_adapter,
    push_dataset,
    push_model,
    push_staged,
    stage_dataset,
    stage_model,
)
from .trainer import HubPublishingMixin


__all__ = [
    "HubPublishingMixin",
    "HubPushError",
    "HubPushResult",
    "StagedUpload",
    "add_eval_report",
    "derta_mix_dataset_card",
    "derta_model_card",
    "framework_versions",
    "hyperparameters_from_args",
    "is_offline",
    "merge_adapter",
    "push_dataset",
    "push_model",
    "push_staged",
    "seas_dataset_card",
    "seas_model_card",
    "stage_dataset",
    "stage_model",
]
