"""Decoupled Refusal Training (DeRTa, arXiv 2407.09121): config, collator and trainer."""

from .collator import BENIGN, FUSED, HARMFUL_PREFIX, RTO, DeRTaCollator
from .config import DeRTaConfig
from .trainer import DeRTaTrainer


__all__ = ["BENIGN", "FUSED", "HARMFUL_PREFIX", "RTO", "DeRTaCollator", "DeRTaConfig", "DeRTaTrainer"]
