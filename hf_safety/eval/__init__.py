"""Safety evaluation: suites, attacks, judged metrics (ASR, refusal, over-refusal with Wilson intervals), reports
(JSON, Markdown, PNG, model-index) and a training callback, all on one loop ([`SafetyEvaluator`]) configured by one
dataclass ([`SafetyEvalConfig`]).

```python
>>> from hf_safety.eval import evaluate_safety
>>> report = evaluate_safety("my-model", suites=["advbench", "xstest"], judge="refusal-strings",
...                          attacks=["none", "prefill"], prefix_lengths=[0, 3, 6], output_dir="eval_out")
>>> print(report.summary_markdown())
```
"""

from .attacks import Attack, AttackPrompt, get_attacks
from .callback import SafetyEvalCallback
from .config import SafetyEvalConfig
from .evaluator import SafetyEvaluator
from .metrics import Rate, metric_path, wilson_interval
from .records import OutputDirError
from .report import EvalRecord, SafetyReport, SuiteAttackResult
from .run import evaluate_safety
from .suites import SUITES, SafetySuite, SuiteError, SuiteRow, load_suite


__all__ = [
    "SUITES",
    "Attack",
    "AttackPrompt",
    "EvalRecord",
    "OutputDirError",
    "Rate",
    "SafetyEvalCallback",
    "SafetyEvalConfig",
    "SafetyEvaluator",
    "SafetyReport",
    "SafetySuite",
    "SuiteAttackResult",
    "SuiteError",
    "SuiteRow",
    "evaluate_safety",
    "get_attacks",
    "load_suite",
    "metric_path",
    "wilson_interval",
]
