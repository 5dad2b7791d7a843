"""`SEASConfig`: `DPOConfig` (the target's DPO) plus the rounds, the attack stage and the red team's DPO."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import GenerationConfig
from trl import DPOConfig


GENERAL_DATA_SIDES = ("target", "red_team", "both")
SEED_SAMPLING = ("stratified", "proportional")


@dataclass
class SEASConfig(DPOConfig):
    r"""
    Configuration class for the [`SEASTrainer`], Self-Evolving Adversarial Safety optimization
    ([paper](https://huggingface.co/papers/2408.02632)).

    The fields inherited from [`~trl.DPOConfig`] are the target's DPO settings (β 0.1, learning rate, epochs...); the
    red team's DPO uses the same ones unless a `red_team_*` field overrides them. Defaults follow the paper where it
    fixes a value (3 rounds, T 0.8 / top-p 0.9, β 0.1, lr 5e-6, 1 epoch, 3000-character filters) and
    `shared/notes/seas.md` §9 where it does not (k, n, m, seeds per round, general-data ratio).

    Parameters:
        > Rounds

        num_iterations (`int`, *optional*, defaults to `3`):
            Rounds of attack → judge → pairs → DPO red team → DPO target.
        accumulate_pairs (`bool`, *optional*, defaults to `False`):
            Whether round `i` trains on the pairs of rounds `0..i` (the paper builds new pairs every round).

        > Attack stage

        num_seed_examples (`int`, *optional*, defaults to `3`):
            k: example prompts of one type in each seed prompt.
        num_adversarial_prompts (`int`, *optional*, defaults to `4`):
            n: adversarial prompts the red team writes per seed.
        num_responses (`int`, *optional*, defaults to `4`):
            m: answers of the target per adversarial prompt.
        seeds_per_iteration (`int`, *optional*, defaults to `1000`):
            Seed prompts per round.
        seed_sampling (`str`, *optional*, defaults to `"stratified"`):
            `"stratified"`: the seed pool's categories in turn, equally often; `"proportional"`: a category drawn in
            proportion to its number of prompts.
        red_team_temperature, red_team_top_p, red_team_max_new_tokens (defaults `0.8`, `0.9`, `128`):
            Sampling of the red team's adversarial prompts.
        target_temperature, target_top_p, target_max_new_tokens (defaults `0.8`, `0.9`, `256`):
            Sampling of the target's answers.
        generation_batch_size (`int`, *optional*, defaults to `16`):
            Prompts per `generate` call (each brings n or m sequences).
        attack_chunk_size (`int`, *optional*, defaults to `64`):
            Seeds per chunk of the attack stage. Chunks are split between the processes of a multi-process run, and
            chunk c samples from seed `seed + 1000 * iteration + 2 * c`: the attack log does not depend on the number
            of processes. Smaller chunks spread a small round over more processes.
        min_prompt_chars / max_prompt_chars (defaults `1` / `3000`):
            Adversarial prompts outside these lengths (after cleaning) are dropped and counted.
        max_response_chars (`int`, *optional*, defaults to `3000`):
            Longer answers are kept in the attack log but left out of the target's pairs.

        > Judge

        judge (`str`, *optional*, defaults to `"llama-guard-3"`):
            The safety judge, by name or spec (see [`~hf_safety.load_judge`]), unless the trainer is given a judge.
        judge_batch_size (`int`, *optional*, defaults to `16`):
            (prompt, response) pairs per judge call.
        judge_mode (`str`, *optional*):
            For a model judge loaded by name: `"score"` (the verdict from one forward pass, the judges' default) or
            `"decode"` (every answer decoded). `results.json` records the path that judged.

        > Pairs and DPO

        general_data_ratio (`float`, *optional*, defaults to `1.0`):
            General preference rows mixed in per SEAS pair (when the trainer is given `general_dataset`).
        general_data_side (`str`, *optional*, defaults to `"target"`):
            Which side gets the general data: `"target"`, `"red_team"` or `"both"`.
        red_team_learning_rate, red_team_num_train_epochs, red_team_beta (*optional*):
            The red team's DPO settings; `None` = the target's.
    """

    # TRL's default (checkpointing on) under transformers 5's name: no deprecation warning for a plain SEASConfig
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of `activation_checkpointing`."}
    )
    activation_checkpointing: bool | None = field(
        default=None, metadata={"help": "Trade compute for memory (default: on, as in TRL)."}
    )
    num_iterations: int = field(default=3, metadata={"help": "Rounds of attack, judge, pairs and DPO of both sides."})
    accumulate_pairs: bool = field(default=False, metadata={"help": "Train round i on the pairs of rounds 0..i."})
    num_seed_examples: int = field(default=3, metadata={"help": "k: example prompts of one type per seed prompt."})
    num_adversarial_prompts: int = field(default=4, metadata={"help": "n: adversarial prompts per seed."})
    num_responses: int = field(default=4, metadata={"help": "m: target answers per adversarial prompt."})
    seeds_per_iteration: int = field(default=1000, metadata={"help": "Seed prompts per round."})
    seed_sampling: str = field(
        default="stratified", metadata={"help": "How seed types are drawn.", "choices": list(SEED_SAMPLING)}
    )
    red_team_temperature: float = field(default=0.8, metadata={"help": "Red team sampling temperature."})
    red_team_top_p: float = field(default=0.9, metadata={"help": "Red team nucleus sampling."})
    red_team_max_new_tokens: int = field(default=128, metadata={"help": "Longest adversarial prompt, in tokens."})
    target_temperature: float = field(default=0.8, metadata={"help": "Target sampling temperature."})
    target_top_p: float = field(default=0.9, metadata={"help": "Target nucleus sampling."})
    target_max_new_tokens: int = field(default=256, metadata={"help": "Longest answer, in tokens."})
    generation_batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    attack_chunk_size: int = field(
        default=64, metadata={"help": "Seeds per attack-stage chunk (the unit split between processes)."}
    )
    min_prompt_chars: int = field(default=1, metadata={"help": "Shorter adversarial prompts are dropped."})
    max_prompt_chars: int = field(default=3000, metadata={"help": "Longer adversarial prompts are dropped."})
    max_response_chars: int = field(default=3000, metadata={"help": "Longer answers are left out of pairs."})
    judge: str = field(default="llama-guard-3", metadata={"help": "Safety judge name or spec (see load_judge)."})
    judge_batch_size: int = field(default=16, metadata={"help": "Pairs per judge call."})
    judge_mode: str | None = field(
        default=None,
        metadata={
            "help": "For a model judge loaded by name: 'score' (one forward pass, the default) or 'decode'.",
            "choices": ["score", "decode"],
        },
    )
    general_data_ratio: float = field(default=1.0, metadata={"help": "General preference rows per SEAS pair."})
    general_data_side: str = field(
        default="target", metadata={"help": "Side that gets general data.", "choices": list(GENERAL_DATA_SIDES)}
    )
    red_team_learning_rate: float | None = field(default=None, metadata={"help": "Red team DPO lr (default: lr)."})
    red_team_num_train_epochs: float | None = field(default=None, metadata={"help": "Red team DPO epochs."})
    red_team_beta: float | None = field(default=None, metadata={"help": "Red team DPO beta (default: beta)."})
    # The paper's DPO learning rate (LLaMA-Factory scripts), not DPOConfig's 1e-6
    learning_rate: float = field(default=5e-6, metadata={"help": "The target's (and by default the red team's) lr."})

    def __post_init__(self):
        for name in (
            "num_iterations",
            "num_seed_examples",
            "num_adversarial_prompts",
            "num_responses",
            "attack_chunk_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"SEASConfig field '{name}' must be >= 1, got {getattr(self, name)}")
        if self.seeds_per_iteration < 1:
            raise ValueError(f"SEASConfig field 'seeds_per_iteration' must be >= 1, got {self.seeds_per_iteration}")
        if self.seed_sampling not in SEED_SAMPLING:
            raise ValueError(f"SEASConfig field 'seed_sampling' must be one of {SEED_SAMPLING}")
        if self.general_data_side not in GENERAL_DATA_SIDES:
            raise ValueError(f"SEASConfig field 'general_data_side' must be one of {GENERAL_DATA_SIDES}")
        if self.general_data_ratio < 0:
            raise ValueError(f"SEASConfig field 'general_data_ratio' must be >= 0, got {self.general_data_ratio}")
        if self.num_responses < 2:
            # a target pair needs a safe and an unsafe answer to the same prompt
            raise ValueError("SEASConfig field 'num_responses' (m) must be >= 2 to build target pairs")
        if self.precompute_ref_log_probs:
            raise ValueError("SEAS changes the reference every round: `precompute_ref_log_probs` is not supported")
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        super().__post_init__()

    def generation_config(self, side: str) -> GenerationConfig:
        """The sampling settings of `side` ("red_team" or "target")."""
        return GenerationConfig(
            do_sample=True,
            temperature=getattr(self, f"{side}_temperature"),
            top_p=getattr(self, f"{side}_top_p"),
            max_new_tokens=getattr(self, f"{side}_max_new_tokens"),
        )
