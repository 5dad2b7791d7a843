"""The SEAS attack stage: the red team writes n prompts per seed, the target answers each m times, the judge labels
every answer. Both generations go through the package's one generator, batched with `num_return_sequences`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from datasets import Dataset, Features, Value
from datasets import Sequence as SequenceFeature
from transformers import GenerationConfig, PreTrainedTokenizerBase
from transformers.utils import logging

from ..eval.evaluator import JudgeLike, as_judge, describe_judge, run_judge
from ..generation import encode_prompt, generate
from .seeds import Seed, clean_adversarial_prompt


logger = logging.get_logger(__name__)

ATTACK_LOG_FEATURES = Features(
    {
        "iteration": Value("int64"),
        "seed_index": Value("int64"),
        "category": Value("string"),
        "seed_prompt": Value("string"),
        "adversarial_index": Value("int64"),
        "adversarial_prompt": Value("string"),
        "response_index": Value("int64"),
        "response": Value("string"),
        "unsafe": Value("bool"),
        "judge_score": Value("float64"),
        "judge_categories": SequenceFeature(Value("string")),
        "response_chars": Value("int64"),
    }
)


@dataclass
class AttackStats:
    """Counts of one attack stage, logged with the round's metrics."""

    num_seeds: int = 0
    num_generated_prompts: int = 0
    num_dropped_empty: int = 0
    num_dropped_length: int = 0
    num_adversarial_prompts: int = 0
    num_responses: int = 0
    num_unsafe: int = 0
    num_safe: int = 0
    num_unknown: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def asr(self) -> float | None:
        """Share of judged answers that are unsafe (unknown verdicts left out)."""
        known = self.num_unsafe + self.num_safe
        return self.num_unsafe / known if known else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "asr": self.asr}


def _encode_all(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    return [encode_prompt(tokenizer, prompt).input_ids for prompt in prompts]


def write_adversarial_prompts(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    seeds: Sequence[Seed],
    num_prompts: int,
    generation_config: GenerationConfig,
    *,
    batch_size: int = 16,
    min_chars: int = 1,
    max_chars: int = 3000,
    seed: int | None = None,
    stats: AttackStats | None = None,
) -> list[list[str]]:
    """`num_prompts` adversarial prompts per seed (chat template applied, cleaned to one prompt, length-filtered);
    `result[i]` are seed `i`'s, dropped ones left out and counted in `stats`."""
    stats = stats if stats is not None else AttackStats()
    out = generate(
        model,
        tokenizer,
        _encode_all(tokenizer, [s.prompt for s in seeds]),
        generation_config,
        batch_size=batch_size,
        num_return_sequences=num_prompts,
        seed=seed,
        desc="red team: writing prompts",
    )
    stats.settings["red_team"] = out.settings
    prompts = []
    for texts in out.texts():
        kept = []
        for text in texts:
            stats.num_generated_prompts += 1
            cleaned = clean_adversarial_prompt(text)
            if not cleaned:
                stats.num_dropped_empty += 1
            elif not min_chars <= len(cleaned) <= max_chars:
                stats.num_dropped_length += 1
            else:
                kept.append(cleaned)
        prompts.append(kept)
    return prompts


def run_attack_stage(
    red_team: tuple[Any, PreTrainedTokenizerBase],
    target: tuple[Any, PreTrainedTokenizerBase],
    seeds: Sequence[Seed],
    judge: JudgeLike,
    *,
    num_prompts: int,
    num_responses: int,
    red_team_generation_config: GenerationConfig,
    target_generation_config: GenerationConfig,
    iteration: int = 0,
    batch_size: int = 16,
    judge_batch_size: int = 16,
    min_prompt_chars: int = 1,
    max_prompt_chars: int = 3000,
    seed: int = 0,
) -> tuple[Dataset, AttackStats]:
    """
    One attack stage. The red team `(model, tokenizer)` writes `num_prompts` adversarial prompts per seed; the target
    answers each `num_responses` times; `judge` labels every (adversarial prompt, answer). Sampling is seeded from
    `seed`, so a rerun (a resumed round) writes the same log.

    Returns:
        The attack log, one row per answer (columns [`ATTACK_LOG_FEATURES`]: `unsafe` is the judge's verdict, `None`
        when it could not be parsed), and the stage's [`AttackStats`] (its `settings["judge"]` records the judge's
        name and `judge_path`, the path that judged: `"score-only+shared-prefix"` for the default Llama Guard).
    """
    judge = as_judge(judge)
    stats = AttackStats(num_seeds=len(seeds))
    described = describe_judge(judge)
    stats.settings["judge"] = {"name": described["name"], "judge_path": described["judge_path"]}
    red_model, red_tokenizer = red_team
    target_model, target_tokenizer = target
    per_seed = write_adversarial_prompts(
        red_model,
        red_tokenizer,
        seeds,
        num_prompts,
        red_team_generation_config,
        batch_size=batch_size,
        min_chars=min_prompt_chars,
        max_chars=max_prompt_chars,
        seed=seed,
        stats=stats,
    )
    flat = [(s, j, prompt) for s, prompts in zip(seeds, per_seed) for j, prompt in enumerate(prompts)]
    stats.num_adversarial_prompts = len(flat)
    if not flat:
        logger.warning("SEAS round %d: the red team wrote no usable prompt (%s)", iteration, stats.to_dict())
        return Dataset.from_list([], features=ATTACK_LOG_FEATURES), stats
    answers = generate(
        target_model,
        target_tokenizer,
        _encode_all(target_tokenizer, [prompt for _, _, prompt in flat]),
        target_generation_config,
        batch_size=batch_size,
        num_return_sequences=num_responses,
        seed=seed + 1,
        desc="target: answering",
    )
    stats.settings["target"] = answers.settings
    rows = []
    for (s, j, prompt), texts in zip(flat, answers.texts()):
        for r, response in enumerate(texts):
            rows.append(
                {
                    "iteration": iteration,
                    "seed_index": s.index,
                    "category": s.category,
                    "seed_prompt": s.prompt,
                    "adversarial_index": j,
                    "adversarial_prompt": prompt,
                    "response_index": r,
                    "response": response,
                    "response_chars": len(response),
                }
            )
    for start in range(0, len(rows), judge_batch_size):
        chunk = rows[start : start + judge_batch_size]
        verdicts = run_judge(
            judge,
            [row["adversarial_prompt"] for row in chunk],
            [row["response"] for row in chunk],
            f"SEAS round {iteration}, answers {start}..{start + len(chunk) - 1}",
        )
        for row, verdict in zip(chunk, verdicts):
            row.update(unsafe=verdict.unsafe, judge_score=verdict.score, judge_categories=list(verdict.categories))
    stats.num_responses = len(rows)
    stats.num_unsafe = sum(row["unsafe"] is True for row in rows)
    stats.num_safe = sum(row["unsafe"] is False for row in rows)
    stats.num_unknown = sum(row["unsafe"] is None for row in rows)
    if stats.num_unknown:
        logger.warning(
            "SEAS round %d: %d of %d verdicts unknown (kept in the attack log, left out of the pairs)",
            iteration,
            stats.num_unknown,
            len(rows),
        )
    return Dataset.from_list(rows, features=ATTACK_LOG_FEATURES), stats


def distinct_ngrams(texts: Sequence[str], n: int = 2) -> float | None:
    """Diversity of generated prompts: distinct word n-grams / all word n-grams (distinct-n); None without n-grams."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None
