"""Judges: one protocol (`judge(prompts, responses) -> list[Verdict]`) and its implementations.

- [`RefusalStringJudge`]: refusal phrase rules and lists (GCG 29/27/13, XSTest 21) with their upstream match rules.
- [`LlamaGuardJudge`]: Llama Guard 2/3 (strict `safe`/`unsafe` parse, category names, P(unsafe) score).
- [`HarmBenchJudge`]: the HarmBench classifiers (repo / card / Mistral prompts, injection-hardened).
- [`WildGuardJudge`]: WildGuard's three labels (prompt harm, refusal, response harm) with plain `transformers`.
- [`ClassifierJudge`]: any sequence-classification checkpoint; [`CallableJudge`]: any Python function.
- [`load_judge`]: any of the above from a name (`"llama-guard-3"`, `"refusal:gcg-13"`, ...) or a local path;
  [`register_judge`] adds names (the toy world's `"toy-seas"`).

Parsers, prompt renderers and the model-judge base class live in the submodules (`hf_safety.judges.llama_guard`, ...).
"""

from .base import Judge, JudgeOutputError, Verdict, check_verdicts
from .classifier import CallableJudge, ClassifierJudge
from .factory import JUDGE_NAMES, load_judge, register_judge
from .harmbench import HarmBenchJudge
from .llama_guard import LlamaGuardJudge
from .model_judge import ModelJudge
from .refusal import REFUSAL_LISTS, RefusalStringJudge
from .wildguard import WildGuardJudge


__all__ = [
    "JUDGE_NAMES",
    "REFUSAL_LISTS",
    "CallableJudge",
    "ClassifierJudge",
    "HarmBenchJudge",
    "Judge",
    "JudgeOutputError",
    "LlamaGuardJudge",
    "ModelJudge",
    "RefusalStringJudge",
    "Verdict",
    "WildGuardJudge",
    "check_verdicts",
    "load_judge",
    "register_judge",
]
