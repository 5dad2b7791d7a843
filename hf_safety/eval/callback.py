"""[`SafetyEvalCallback`]: a small safety evaluation every N training steps (DeRTa, SEAS or any `Trainer`), logged
to the trainer's trackers beside the loss."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from transformers import GenerationConfig, Trainer, TrainerCallback
from trl.models.utils import unwrap_model_for_generation

from .attacks import Attack
from .config import SafetyEvalConfig
from .evaluator import JudgeLike, SafetyEvaluator
from .report import SafetyReport
from .suites import SafetySuite


class SafetyEvalCallback(TrainerCallback):
    """
    Runs a (small) safety evaluation with the model being trained every `every_n_steps` optimizer steps and logs its
    metrics, named `{metric_prefix}{suite}/{attack}/{metric}` (e.g. `safety/xstest/none/over_refusal`,
    `safety/advbench/prefill:6/asr`, with `_ci_low`/`_ci_high`/`_unknown_rate` beside each rate), to
    `trainer.state.log_history` and every tracker in `report_to`.

    Generation uses `trl.models.unwrap_model_for_generation` (so it works under DeepSpeed ZeRO-3 / FSDP and with
    gradient checkpointing), the model is in eval mode while generating and back in train mode afterwards, and the
    suite's rows are split between processes and the records gathered, so every process logs the same numbers. The
    metrics are logged through `transformers.Trainer.log` (the base implementation: TRL trainers' `log` would flush
    their accumulated training metrics into this entry).

    Usage:
    ```python
    >>> trainer = DeRTaTrainer(...)
    >>> trainer.add_callback(SafetyEvalCallback(trainer, suite=load_suite("xstest", limit=50),
    ...                                         judge=my_judge, attacks=["none", "prefill:6"], every_n_steps=100))
    ```

    Args:
        trainer: the trainer the callback is attached to (its model, tokenizer, accelerator and `log` are used).
        suite: a [`SafetySuite`], a name/path for [`load_suite`], or a list of them.
        judge: a [`~hf_safety.judges.Judge`], a judge name, or a callable `(prompts, responses) -> verdicts`.
        attacks: attack names or objects (see [`get_attacks`]).
        every_n_steps: how often (in optimizer steps); default: the trainer's `eval_steps`, else `logging_steps`.
        prefix_lengths: prefix lengths for the `prefill` attack.
        generation_config: default: greedy, 64 new tokens (short, to keep training fast).
        batch_size: default: `per_device_eval_batch_size`.
        limit: evaluate only the first `limit` rows of each suite.
        refusal_judge: optional second judge for refusal labels (see [`evaluate_safety`]).
        metric_prefix: prefix of the logged metric names.
        eval_on_start: also evaluate before the first step (logged at step 0).
        config: a [`SafetyEvalConfig`] holding the evaluation settings instead of the keyword arguments above (its
            `suites`, `judge` and `attacks` are used unless `suite`, `judge`, `attacks` are given; nothing is written
            to its `output_dir`: the metrics go to the trainer's logs).
    """

    def __init__(
        self,
        trainer: Trainer,
        suite: SafetySuite | str | Sequence[SafetySuite | str] | None = None,
        judge: JudgeLike | None = None,
        attacks: Sequence[str | Attack] | None = None,
        every_n_steps: int | None = None,
        prefix_lengths: Sequence[int] = (0, 6),
        generation_config: GenerationConfig | None = None,
        batch_size: int | None = None,
        limit: int | None = None,
        refusal_judge: JudgeLike | None = None,
        metric_prefix: str = "safety/",
        eval_on_start: bool = False,
        include_prefill_in_response: bool = False,
        prefix_unit: str = "tokens",
        config: SafetyEvalConfig | None = None,
    ):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.trainer = trainer
        if config is None:
            config = SafetyEvalConfig(
                limit=limit,
                prefix_lengths=list(prefix_lengths),
                prefix_unit=prefix_unit,
                batch_size=batch_size or trainer.args.per_device_eval_batch_size,
                max_new_tokens=64,
                include_prefill_in_response=include_prefill_in_response,
                progress=False,
            )
        self.config = config = dataclasses.replace(config, output_dir=None)  # metrics go to the logs
        self.evaluator = SafetyEvaluator(
            self.config,
            suites=suite,
            judge=judge,
            refusal_judge=refusal_judge,
            attacks=attacks,
            generation_config=generation_config,
        )
        self.every_n_steps = every_n_steps
        self.metric_prefix = metric_prefix
        self.eval_on_start = eval_on_start
        self.last_report: SafetyReport | None = None
        self.history: list[tuple[int, dict[str, float | int]]] = []
        self._last_step = -1

    def evaluate(self) -> SafetyReport:
        """Runs the evaluation now with the trainer's model and returns the [`SafetyReport`] (nothing is logged)."""
        trainer = self.trainer
        tokenizer = trainer.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model:
            return self.evaluator.evaluate(model, tokenizer, accelerator=trainer.accelerator)

    def _run_and_log(self, state, control) -> None:
        self._last_step = state.global_step
        report = self.evaluate()
        self.last_report = report
        metrics = report.metrics(self.metric_prefix)
        self.history.append((state.global_step, dict(metrics)))
        # `on_log` resets `control.should_log`, which would drop the trainer's own log of this step
        should_log = control.should_log
        Trainer.log(self.trainer, dict(metrics))
        control.should_log = should_log

    def on_train_begin(self, args, state, control, **kwargs: Any):
        if self.eval_on_start and state.global_step == 0:
            self._run_and_log(state, control)

    def on_step_end(self, args, state, control, **kwargs: Any):
        every = self.every_n_steps or state.eval_steps or state.logging_steps or args.logging_steps
        if state.global_step == self._last_step or not every or state.global_step % int(every) != 0:
            return
        self._run_and_log(state, control)
