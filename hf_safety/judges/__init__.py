"""Judges: one protocol (`judge(prompts, responses) -> list[Verdict]`) and its implementations.

- [`RefusalStringJudge`]: refusal phrase rules and lists (GCG 29/27/13, XSTest 21) with their upstream match rules.
- [`LlamaGuardJudge`]: Llama Guard 2/3 (strict `safe`/`unsafe` parse, category names, P(unsafe) score).
  [`LlamaGuard4Judge`]: Llama Guard 4 (its own prompt, text only), same parse and score.
- [`ShieldGemmaJudge`]: ShieldGemma 2B/9B/27B, P(Yes) per harm-type principle, verdict `score >= threshold`.
- [`StrongREJECTJudge`]: the StrongREJECT graded score (rubric answered by any local chat model, or the fine-tuned
  evaluator), `unsafe = score >= threshold`.
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
from .llama_guard4 import LlamaGuard4Judge
from .model_judge import ModelJudge
from .refusal import REFUSAL_LISTS, RefusalStringJudge
from .shieldgemma import ShieldGemmaJudge
from .strongreject import StrongREJECTJudge
from .wildguard import WildGuardJudge


__all__ = [
    "JUDGE_NAMES",
    "REFUSAL_LISTS",
    "CallableJudge",
    "ClassifierJudge",
    "HarmBenchJudge",
    "Judge",
    "JudgeOutputError",
    "LlamaGuard4Judge",
    "LlamaGuardJudge",
    "ModelJudge",
    "RefusalStringJudge",
    "ShieldGemmaJudge",
    "StrongREJECTJudge",
    "Verdict",
    "WildGuardJudge",
    "check_verdicts",
    "load_judge",
    "register_judge",
]
