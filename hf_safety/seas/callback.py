"""Callbacks of the SEAS rounds: per-round events, and the red team's DPO logs forwarded to the main trainer."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class SEASCallback(TrainerCallback):
    """
    A [`~transformers.TrainerCallback`] with SEAS's per-round events, called by [`SEASTrainer`] with the usual
    `(args, state, control)` and keyword arguments. Subclass it to evaluate or publish after each round; callbacks
    without these methods (reporting integrations, ...) simply do not receive them.

    Events (keyword arguments):
        on_round_begin: `iteration`.
        on_attack_end: `iteration`, `attack_log` (the judged `Dataset`), `stats` ([`AttackStats`]).
        on_pairs_built: `iteration`, `red_team_pairs`, `target_pairs` (the `Dataset`s each side trains on).
        on_round_end: `iteration`, `metrics` (the round's metrics, as logged and written to `results.json`),
            `red_team_model`, `target_model`, `output_dir` (the round's folder).
    """

    def on_round_begin(self, args, state, control, **kwargs: Any):
        pass

    def on_attack_end(self, args, state, control, **kwargs: Any):
        pass

    def on_pairs_built(self, args, state, control, **kwargs: Any):
        pass

    def on_round_end(self, args, state, control, **kwargs: Any):
        pass


class _RedTeamLogBridge(TrainerCallback):
    """Forwards the red team's DPO logs (from its own trainer) to the SEAS trainer's trackers, prefixed `red_team/`."""

    def __init__(self, trainer: Any, iteration: int):
        self.trainer, self.iteration = trainer, iteration

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.trainer.log({f"red_team/{k}": v for k, v in logs.items()} | {"seas/iteration": self.iteration})
