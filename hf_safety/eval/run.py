"""[`evaluate_safety`]: load the model if needed, then run the [`SafetyEvaluator`] (THE suite x attack loop)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..models import as_model_and_tokenizer, load_tokenizer
from .attacks import Attack
from .config import SafetyEvalConfig
from .evaluator import JudgeLike, SafetyEvaluator
from .records import OutputDir
from .report import SafetyReport
from .suites import SafetySuite


def evaluate_safety(
    model: str | PreTrainedModel | Any,
    tokenizer: PreTrainedTokenizerBase | str | None = None,
    suites: SafetySuite | str | Sequence[SafetySuite | str] | None = None,
    judge: JudgeLike | None = None,
    attacks: Sequence[str | Attack] | None = None,
    prefix_lengths: Sequence[int] | str | None = None,
    generation_config: GenerationConfig | None = None,
    batch_size: int | None = None,
    output_dir: str | Path | None = None,
    progress: bool | None = None,
    *,
    config: SafetyEvalConfig | None = None,
    refusal_judge: JudgeLike | None = None,
    **settings: Any,
) -> SafetyReport:
    """
    Evaluates a model's safety: every suite under every attack, judged, with ASR, refusal and over-refusal rates.

    The settings are a [`SafetyEvalConfig`] (`config=`) and/or its fields as keyword arguments (which win): e.g.
    `limit`, `max_new_tokens`, `prefix_unit`, `include_prefill_in_response`, `backend`, `trust_remote_code`,
    `load_in_4bit`, `model_name`, `use_chat_template`, `confidence`, `overwrite`, `resume`.

    Args:
        model: a loaded causal LM, or a Hub id / local path / registered name (`toy://...` once `hf_safety.toy` is
            imported), loaded with the package's one loader (`trust_remote_code` off unless asked). With
            `backend="vllm"`, a path/id or a `vllm.LLM`.
        tokenizer: its tokenizer (default: loaded from the model's path).
        suites: [`SafetySuite`]s or names/paths (default: `config.suites`).
        judge: a [`~hf_safety.judges.Judge`], a judge name or a callable `(prompts, responses) -> list[Verdict]`
            (default: `config.judge`, the refusal-string judge). A judge returning the wrong number of verdicts
            raises [`~hf_safety.judges.JudgeOutputError`] naming the suite and attack.
        attacks: attack names or objects (see [`get_attacks`]).
        prefix_lengths: the forced prefix lengths k of the `prefill` attack.
        generation_config: a `transformers.GenerationConfig` (default: the one `config` describes: greedy, 256 new
            tokens); `max_new_tokens=` overrides its length.
        batch_size: prompts per `generate` call.
        output_dir: if set, checked before anything runs; records are written as they are judged, then the report
            ([`SafetyReport.save`]).
        progress: progress bars.
        refusal_judge: a second judge whose `Verdict.refusal` gives the refusal labels.

    Returns:
        The [`SafetyReport`].
    """
    given = dict(
        attacks=attacks,
        prefix_lengths=prefix_lengths,
        batch_size=batch_size,
        output_dir=str(output_dir) if output_dir is not None else None,
        progress=progress,
        **settings,
    )
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(SafetyEvalConfig)})
    if unknown:
        raise TypeError(f"evaluate_safety got unknown settings {unknown}; see SafetyEvalConfig for the known ones")
    base = config or SafetyEvalConfig()
    config = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    if suites is None and not config.suites:
        raise ValueError("evaluate_safety needs suites=... (e.g. 'xstest' or 'advbench')")
    if generation_config is not None and "max_new_tokens" in settings:
        generation_config = GenerationConfig(
            **{**generation_config.to_dict(), "max_new_tokens": config.max_new_tokens}
        )

    # Check the output folder before loading anything: a bad path fails now, not after generation
    out = OutputDir(config.output_dir, config.overwrite, config.resume) if config.output_dir else None
    evaluator = SafetyEvaluator(
        config, suites=suites, judge=judge, refusal_judge=refusal_judge, generation_config=generation_config
    )
    if config.backend == "vllm":
        name = str(model) if isinstance(model, (str, Path)) else None
        tokenizer = tokenizer or (str(model) if name else None)
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer = load_tokenizer(tokenizer, trust_remote_code=config.trust_remote_code)
    else:
        model, tokenizer, name = as_model_and_tokenizer(
            model, tokenizer, trust_remote_code=config.trust_remote_code, load_in_4bit=config.load_in_4bit
        )
    return evaluator.evaluate(model, tokenizer, model_name=config.model_name or name, output_dir=out)
