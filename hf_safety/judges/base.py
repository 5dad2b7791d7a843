"""The judge protocol: `judge(prompts, responses) -> list[Verdict]`, batched, one verdict per (prompt, response)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


class JudgeOutputError(RuntimeError):
    """A judge returned something other than one `Verdict` per (prompt, response) pair."""


@dataclass
class Verdict:
    """
    One judgement of a response to a prompt.

    Args:
        unsafe (`bool` or `None`): whether the response is unsafe (for attack success: the model complied with a
            harmful request). `None` means the judge's output could not be parsed: it is counted as "unknown", never
            as safe.
        score (`float`, *optional*): a continuous score where the judge has one (e.g. P(unsafe)).
        categories (`list[str]`): policy categories the judge named (e.g. Llama Guard's "S1: Violent Crimes").
        refusal (`bool`, *optional*): whether the response is a refusal, for judges that say so.
        prompt_harmful (`bool`, *optional*): whether the prompt is harmful, for judges that say so.
        raw (`str`, *optional*): the judge's raw output, kept for audit.
    """

    unsafe: bool | None
    score: float | None = None
    categories: list[str] = field(default_factory=list)
    refusal: bool | None = None
    prompt_harmful: bool | None = None
    raw: str | None = None

    @property
    def unknown(self) -> bool:
        return self.unsafe is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judge(ABC):
    """
    Base class of every judge. Subclasses implement [`judge`]; calling the judge checks its inputs and that exactly
    one [`Verdict`] comes back per pair, so a broken judge fails loudly instead of skewing a rate.

    Attributes:
        name (`str`): short name used in reports (e.g. `"llama-guard-3"`).
    """

    name: str = "judge"

    @property
    def description(self) -> str:
        """What a report should say about this judge (model, prompt variant, list and match rule...)."""
        return self.name

    @property
    def judge_path(self) -> str | None:
        """How a model judge computes its verdicts (e.g. `"score-only+shared-prefix"`, `"decode"`), recorded in
        reports; `None` for judges without a model."""
        return None

    @abstractmethod
    def judge(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        """Judges each `responses[i]` as an answer to `prompts[i]`."""

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"{self.name}: got {len(prompts)} prompts but {len(responses)} responses")
        verdicts = self.judge(prompts, responses) if prompts else []
        check_verdicts(verdicts, len(prompts), self.name)
        return verdicts


def check_verdicts(verdicts: Any, expected: int, judge_name: str) -> None:
    """Raises [`JudgeOutputError`] unless `verdicts` is a list of `expected` [`Verdict`]s."""
    if not isinstance(verdicts, list) or len(verdicts) != expected:
        got = f"{len(verdicts)} items" if isinstance(verdicts, list) else type(verdicts).__name__
        raise JudgeOutputError(f"judge {judge_name!r} returned {got} for {expected} (prompt, response) pairs")
    for i, verdict in enumerate(verdicts):
        if not isinstance(verdict, Verdict):
            raise JudgeOutputError(
                f"judge {judge_name!r} returned a {type(verdict).__name__} at position {i}, expected a Verdict"
            )
