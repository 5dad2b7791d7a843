"""SEAS: Self-Evolving Adversarial Safety optimization (arXiv 2408.02632): a red team and a target trained against
each other with DPO, round after round, on the verdicts of a safety judge."""

from .attack import ATTACK_LOG_FEATURES, AttackStats, distinct_ngrams, run_attack_stage, write_adversarial_prompts
from .callback import SEASCallback
from .config import SEASConfig
from .pairs import build_red_team_pairs, build_target_pairs, mix_general_data, pair_counts
from .seeds import RED_TEAM_INSTRUCTION, Seed, SeedPool, clean_adversarial_prompt, red_team_instruction
from .trainer import SEASTrainer, iteration_dir


__all__ = [
    "ATTACK_LOG_FEATURES",
    "RED_TEAM_INSTRUCTION",
    "AttackStats",
    "SEASCallback",
    "SEASConfig",
    "SEASTrainer",
    "Seed",
    "SeedPool",
    "build_red_team_pairs",
    "build_target_pairs",
    "clean_adversarial_prompt",
    "distinct_ngrams",
    "iteration_dir",
    "mix_general_data",
    "pair_counts",
    "red_team_instruction",
    "run_attack_stage",
    "write_adversarial_prompts",
]
