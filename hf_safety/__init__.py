"""hf_safety: safety fine-tuning for LLMs as drop-in TRL trainers (DeRTa, SEAS), with recipes, evals and Hub cards.

Public API only; heavy imports (torch, transformers, trl) happen on first attribute access.
"""

from importlib import import_module
from typing import TYPE_CHECKING


__version__ = "0.1.0.dev0"

_LAZY = {
    "DeRTaConfig": "hf_safety.derta",
    "DeRTaCollator": "hf_safety.derta",
    "DeRTaTrainer": "hf_safety.derta",
    "InvalidRowError": "hf_safety.data",
    "SafetyEvalCallback": "hf_safety.eval",
    "SafetyEvalConfig": "hf_safety.eval",
    "SafetyEvaluator": "hf_safety.eval",
    "SafetyReport": "hf_safety.eval",
    "evaluate_safety": "hf_safety.eval",
    "load_suite": "hf_safety.eval",
    "load_judge": "hf_safety.judges",
    "Verdict": "hf_safety.judges",
    "SEASCallback": "hf_safety.seas",
    "SEASConfig": "hf_safety.seas",
    "SEASTrainer": "hf_safety.seas",
}

__all__ = [
    "DeRTaCollator",
    "DeRTaConfig",
    "DeRTaTrainer",
    "InvalidRowError",
    "SEASCallback",
    "SEASConfig",
    "SEASTrainer",
    "SafetyEvalCallback",
    "SafetyEvalConfig",
    "SafetyEvaluator",
    "SafetyReport",
    "Verdict",
    "__version__",
    "evaluate_safety",
    "load_judge",
    "load_suite",
]

if TYPE_CHECKING:
    from .data import InvalidRowError
    from .derta import DeRTaCollator, DeRTaConfig, DeRTaTrainer
    from .eval import SafetyEvalCallback, SafetyEvalConfig, SafetyEvaluator, SafetyReport, evaluate_safety, load_suite
    from .judges import Verdict, load_judge
    from .seas import SEASCallback, SEASConfig, SEASTrainer


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_safety' has no attribute {name!r}")
