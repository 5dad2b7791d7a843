"""[`SafetyEvaluator`]: THE suite x attack loop. `evaluate_safety`, `SafetyEvalCallback` and SEAS's per-round
evaluation all run through [`SafetyEvaluator.evaluate`].

For each suite and each attack: the attack turns every row into an [`AttackPrompt`] (rows it does not apply to are
counted as skipped; an attack that applies to no row is *not applicable*, shown as n/a, never as 0%), the model
answers through the shared generator (`hf_safety.generation`), and the judge reads `(request, response)` pairs: the
request is the row's behaviour or request text (not the attacked prompt: a base64 blob tells a judge nothing), and the
response is what the model wrote after the forced prefix (with the prefix too if `include_prefill_in_response`),
deciphered for cipher attacks where the model wrote in cipher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, PreTrainedTokenizerBase

from ..generation import encode_prompt, generate, generate_vllm
from ..judges import Judge, JudgeOutputError, Verdict, check_verdicts
from .attacks import AS_WRITTEN, Attack, get_attacks
from .config import SafetyEvalConfig
from .records import OutputDir
from .report import EvalRecord, SafetyReport, SuiteAttackResult
from .suites import SafetySuite, SuiteRow, load_suite


logger = logging.getLogger(__name__)

JudgeLike = Judge | Callable[[list[str], list[str]], list[Verdict]] | str


def as_judge(judge: JudgeLike, judge_mode: str | None = None) -> Judge:
    """A [`Judge`] from a judge (returned as is), a judge name, or a plain callable `(prompts, responses) -> verdicts`
    (wrapped in a `CallableJudge` named after the function, so it gets the same verdict-count checks). `judge_mode`
    (`"score"` or `"decode"`) goes to a judge loaded by name; `None` keeps the judge's default (score-only where the
    judge has it)."""
    if isinstance(judge, Judge):
        return judge
    from .. import judges  # looked up at call time: judges may pull in model code

    if callable(judge):
        return judges.load_judge(judge, name=getattr(judge, "__name__", "callable"))
    if isinstance(judge, str):
        if judge_mode is None:
            return judges.load_judge(judge)
        try:
            return judges.load_judge(judge, judge_mode=judge_mode)
        except TypeError as error:
            if "judge_mode" not in str(error):
                raise
            raise ValueError(f"judge {judge!r} has one path only: judge_mode={judge_mode!r} does not apply") from None
    raise TypeError(
        f"judge must be a Judge, a judge name or a callable (prompts, responses) -> verdicts, got {judge!r}"
    )


def describe_judge(judge: Judge) -> dict[str, Any]:
    """What a report records about a judge: its name, class, description and `judge_path` (which path of a model
    judge computed the verdicts, e.g. `"score-only+shared-prefix"`; `None` for judges without a model)."""
    return {
        "name": judge.name,
        "class": type(judge).__name__,
        "description": judge.description,
        "judge_path": getattr(judge, "judge_path", None),
    }


def run_judge(judge: Judge, prompts: list[str], responses: list[str], context: str) -> list[Verdict]:
    """Calls `judge` and checks that it returned one [`Verdict`] per pair; errors name `context` (suite/attack)."""
    try:
        verdicts = judge(prompts, responses)
        check_verdicts(verdicts, len(prompts), judge.name)  # again, for judges that override __call__
    except JudgeOutputError as err:
        raise JudgeOutputError(f"{err} (while judging {context})") from err
    return verdicts


def _last_user_message(messages: list[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else messages[-1]["content"]


def load_suites(
    suites: SafetySuite | str | Path | Sequence[SafetySuite | str | Path],
    limit: int | None = None,
    column_mapping: dict[str, str] | None = None,
    split: str | None = None,
) -> list[SafetySuite]:
    """Suites from [`SafetySuite`]s or names/paths (`column_mapping` applies to file suites only; known suites keep
    their declared mapping); `limit` keeps the first rows of each split or label ([`SafetySuite.head`])."""
    from .suites import SUITES

    if isinstance(suites, (SafetySuite, str, Path)):
        suites = [suites]
    loaded = []
    for suite in suites:
        if not isinstance(suite, SafetySuite):
            known = str(suite).lower() in SUITES and not Path(str(suite)).is_file()
            suite = load_suite(suite, column_mapping=None if known else column_mapping, split=split)
        loaded.append(suite.head(limit) if limit is not None else suite)
    if not loaded:
        raise ValueError("no suite to evaluate: give at least one (e.g. suites=['xstest'], CLI --suites xstest)")
    names = [s.name for s in loaded]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several suites are named {duplicates}; give them distinct names (load_suite(..., name=))")
    return loaded


class SafetyEvaluator:
    """
    Runs every suite under every attack through a model, judges the answers and gathers a [`SafetyReport`].

    Args:
        config ([`SafetyEvalConfig`], *optional*): the settings (defaults: `SafetyEvalConfig()`).
        suites (*optional*): [`SafetySuite`]s or names/paths, instead of `config.suites`.
        judge (*optional*): a [`~hf_safety.judges.Judge`] or a callable, instead of the name `config.judge`.
        refusal_judge (*optional*): likewise, instead of `config.refusal_judge`.
        attacks (*optional*): attack names or [`Attack`] objects, instead of `config.attacks`.
        generation_config (`transformers.GenerationConfig`, *optional*): instead of the one `config` describes.

    Example:
    ```python
    >>> evaluator = SafetyEvaluator(SafetyEvalConfig(suites=["advbench"], attacks=["none", "prefill"], limit=50))
    >>> report = evaluator.evaluate(model, tokenizer)
    ```
    """

    def __init__(
        self,
        config: SafetyEvalConfig | None = None,
        *,
        suites: SafetySuite | str | Sequence[SafetySuite | str] | None = None,
        judge: JudgeLike | None = None,
        refusal_judge: JudgeLike | None = None,
        attacks: Sequence[str | Attack] | None = None,
        generation_config: GenerationConfig | None = None,
    ):
        self.config = config = config or SafetyEvalConfig()
        attacks = attacks if attacks is not None else config.attacks
        self.attacks = get_attacks(attacks, config.prefix_lengths, config.prefix_unit)
        self.suites = load_suites(
            suites if suites is not None else config.suites, config.limit, config.column_mapping_dict(), config.split
        )
        self.judge = as_judge(judge if judge is not None else config.judge, config.judge_mode)
        refusal_judge = refusal_judge if refusal_judge is not None else config.refusal_judge
        self.refusal_judge = as_judge(refusal_judge) if refusal_judge is not None else None
        self.generation_config = generation_config or config.generation_config()

    def evaluate(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_name: str | None = None,
        output_dir: str | Path | OutputDir | None = None,
        accelerator: Any = None,
    ) -> SafetyReport:
        """
        Evaluates `model` (a causal LM, or with `backend="vllm"` a `vllm.LLM` or path) and returns the report.

        Args:
            model_name: the model's name in the report.
            output_dir: where to write (default: `config.output_dir`); an [`OutputDir`] already checked, or a path
                checked now (see [`OutputDir`]). Each suite x attack block is appended to `records.jsonl` as soon as
                it is judged; the report, summary and plots are written at the end.
            accelerator: an `accelerate.Accelerator`: the rows are split between processes and the records gathered,
                so every process returns the same report (only the main process writes files).
        """
        config = self.config
        out = output_dir if isinstance(output_dir, OutputDir) else None
        if out is None and (output_dir or config.output_dir) is not None:
            out = OutputDir(output_dir or config.output_dir, overwrite=config.overwrite, resume=config.resume)
        main_process = accelerator is None or accelerator.is_main_process
        chat = tokenizer.chat_template is not None if config.use_chat_template is None else config.use_chat_template
        name = model_name or config.model_name or _model_name(model)
        settings: dict[str, Any] = {}
        results = []
        done = out.start(self._fingerprint(name)) if out is not None and main_process else {}
        for suite in self.suites:
            for attack in self.attacks:
                context = f"suite {suite.name!r}, attack {attack.key!r}"
                if (suite.name, attack.key) in done:
                    records, skipped = done[(suite.name, attack.key)]
                else:
                    records, skipped, ran = self._run_block(
                        model, tokenizer, suite.rows, attack, context, chat, accelerator
                    )
                    settings = ran or settings  # a block the attack did not apply to generated nothing
                    if out is not None and main_process:
                        out.append_block(suite.name, attack.key, records, skipped)
                if skipped == len(suite):
                    logger.warning("%s: not applicable to any row (e.g. no target to prefill)", context)
                elif skipped:
                    logger.warning(
                        "%s: %d of %d rows skipped (the attack does not apply)", context, skipped, len(suite)
                    )
                results.append(
                    SuiteAttackResult.from_records(
                        suite.name, attack.key, attack.name, attack.prefix_length, records, skipped, config.confidence
                    )
                )
        settings = settings or self._settings_without_generating()
        settings.update(
            backend=config.backend,
            chat_template=chat,
            prefix_unit=config.prefix_unit,
            include_prefill_in_response=config.include_prefill_in_response,
        )
        report = SafetyReport(
            model_name=name,
            judge=describe_judge(self.judge),
            refusal_source="judge"
            if self.refusal_judge is None
            else describe_judge(self.refusal_judge)["description"],
            generation=settings,
            suites={s.name: s.info() for s in self.suites},
            attacks={a.key: a.to_dict() for a in self.attacks},
            results=results,
        )
        if out is not None and main_process:
            report.save(out.path)
        return report

    # -- one suite x attack block ---------------------------------------------------------------------------------

    def _run_block(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        rows: list[SuiteRow],
        attack: Attack,
        context: str,
        chat: bool,
        accelerator: Any,
    ) -> tuple[list[EvalRecord], int, dict[str, Any]]:
        if accelerator is None:
            return self.collect_records(model, tokenizer, rows, attack, context, chat)
        from accelerate.utils import gather_object

        with accelerator.split_between_processes(rows) as local_rows:
            records, skipped, settings = self.collect_records(model, tokenizer, local_rows, attack, context, chat)
        records = sorted(gather_object(records), key=lambda r: r.index)
        return records, sum(gather_object([skipped])), settings

    def collect_records(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        rows: Sequence[SuiteRow],
        attack: Attack,
        context: str = "",
        chat: bool = True,
    ) -> tuple[list[EvalRecord], int, dict[str, Any]]:
        """
        Attacks, generates and judges `rows`.

        Returns:
            `(records, n_skipped, generation_settings)`: one [`EvalRecord`] per row the attack applies to, the number
            of rows it did not apply to, and the generation settings that ran (empty when nothing was generated).
        """
        config = self.config
        applied = [(row, attack.apply(row)) for row in rows]
        kept = [(row, prompt) for row, prompt in applied if prompt is not None]
        if not kept:
            return [], len(rows), {}
        encoded = [
            encode_prompt(tokenizer, p.messages, p.prefill, p.prefill_tokens, use_chat_template=chat) for _, p in kept
        ]
        inputs = [e.input_ids for e in encoded]
        if config.backend == "vllm":
            output = generate_vllm(
                model, tokenizer, inputs, self.generation_config, seed=config.seed, progress=config.progress
            )
        else:
            output = generate(
                model,
                tokenizer,
                inputs,
                self.generation_config,
                batch_size=config.batch_size,
                seed=config.seed if self.generation_config.do_sample else None,
                progress=config.progress,
                desc=context or attack.key,
            )
        samples = output.first()
        prefills = [tokenizer.decode(e.forced_ids, skip_special_tokens=True) if e.forced_ids else "" for e in encoded]
        judged, notes = [], []
        for prefill, sample in zip(prefills, samples):
            text = prefill + sample.text if config.include_prefill_in_response else sample.text
            text, note = attack.decode_response_info(text)
            judged.append(text)
            notes.append(None if note == AS_WRITTEN else note)
        prompts = [row.judge_prompt for row, _ in kept]
        verdicts = run_judge(self.judge, prompts, judged, context or attack.key)
        refusals = [v.refusal for v in verdicts]
        if self.refusal_judge is not None:
            refusal_verdicts = run_judge(self.refusal_judge, prompts, judged, f"{context} (refusal judge)")
            refusals = [v.refusal for v in refusal_verdicts]
        records = [
            EvalRecord(
                index=row.index,
                id=row.id,
                label=row.label,
                category=row.category,
                prompt=row.judge_prompt,
                attack_prompt=_last_user_message(prompt.messages),
                prefill=prefill,
                response=text,
                raw_response=sample.text,
                verdict=verdict.to_dict(),
                refusal=refusal,
                response_note=note,
            )
            for (row, prompt), prefill, sample, text, note, verdict, refusal in zip(
                kept, prefills, samples, judged, notes, verdicts, refusals
            )
        ]
        return records, len(rows) - len(kept), output.settings

    # -- what a report and a resume check record --------------------------------------------------------------------

    def _settings_without_generating(self) -> dict[str, Any]:
        config = self.generation_config
        settings = {"do_sample": bool(config.do_sample), "max_new_tokens": config.max_new_tokens}
        settings["batch_size"] = self.config.batch_size
        return settings

    def _fingerprint(self, model_name: str) -> dict[str, Any]:
        """What must match for a resumed evaluation to continue the same one."""
        return {
            "model_name": model_name,
            "judge": describe_judge(self.judge)["description"],
            "refusal_judge": describe_judge(self.refusal_judge)["description"] if self.refusal_judge else None,
            "suites": {s.name: len(s) for s in self.suites},
            "attacks": [a.key for a in self.attacks],
            "generation": self.generation_config.to_diff_dict(),
            "include_prefill_in_response": self.config.include_prefill_in_response,
            "prefix_unit": self.config.prefix_unit,
        }


def _model_name(model: Any) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    from ..models import model_name

    return model_name(model)
