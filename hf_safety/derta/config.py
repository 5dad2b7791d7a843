"""`DeRTaConfig`: `SFTConfig` plus the knobs of Decoupled Refusal Training."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from .collator import DERTA_FORMS, PREFIX_SAMPLING


@dataclass
class DeRTaConfig(SFTConfig):
    r"""
    Configuration class for the [`DeRTaTrainer`], Decoupled Refusal Training
    ([paper](https://huggingface.co/papers/2407.09121)).

    This class includes only the parameters that are specific to DeRTa. For a full list of training arguments, please
    refer to the [`~trl.SFTConfig`] and [`~transformers.TrainingArguments`] documentation. The paper's ablations are
    one flag away: SFT only (`harmful_prefix=False, rto=False`, which trains exactly like `SFTTrainer` on the safe
    answers), +harmful prefix (`rto=False`), +RTO (`harmful_prefix=False`), DeRTa (both, the default).

    Parameters:
        > Parameters that control the DeRTa objectives

        refusal_text (`str`, *optional*, defaults to `"Sorry"`):
            Refusal whose first token (as the tokenizer writes it at the start of an answer) is the RTO target.
        harmful_prefix (`bool`, *optional*, defaults to `True`):
            Whether to train MLE on the safe answer after a harmful prefix of sampled length. If `False`, harmful rows
            train plain SFT on the safe answer.
        rto (`bool`, *optional*, defaults to `True`):
            Whether to add the Reinforced Transition Optimization sequences: prompt + whole harmful answer, with the
            refusal token as the target at every harmful position.
        rto_weight (`float`, *optional*, defaults to `1.0`):
            Weight λ of the RTO term: loss = (Σ MLE token NLL + λ Σ RTO token NLL) / number of labelled tokens.
        prefix_length_sampling (`str`, *optional*, defaults to `"uniform"`):
            How the harmful prefix length `k` is drawn: `"uniform"` over `0..len(harmful answer)` tokens, or
            `"word_boundary"` (a cut at a random word start inside the answer, as the reference code does; combine
            with `empty_prefix_prob=0.333` to match it).
        empty_prefix_prob (`float`, *optional*, defaults to `0.0`):
            Probability of an empty harmful prefix (`k = 0`), drawn before the length.
        rto_position_keep (`float`, *optional*, defaults to `1.0`):
            Fraction of harmful positions that get the RTO target (1.0 = every position, as in the paper; the
            reference code keeps about 5%%). At least one position per sequence is kept.
        derta_form (`str`, *optional*, defaults to `"fused"`):
            `"fused"`: one tree-masked sequence per harmful row, prompt + harmful answer + safe answer, that computes
            the shared prompt and prefix once, with the same loss and gradients as `"naive"` (see [`DeRTaCollator`]).
            It needs a model that takes a custom 4-D attention mask (`attn_implementation` "sdpa" or "eager", one
            attention type for every layer, no router aux loss); elsewhere the trainer falls back to `"naive"` and
            logs why. `"naive"`: a harmful row trains as two sequences, prompt + harmful prefix + safe answer and
            prompt + whole harmful answer.
        padding_free (`bool`, *optional*, defaults to `False`):
            As in [`~trl.SFTConfig`]: each batch's sequences go in one row, one after the other, separated by their
            position ids, so short sequences do not pay for padding (flash attention makes the most of it; with
            sdpa/eager the mask is built per row). DeRTa draws its sequences per batch, so `packing` (which packs
            dataset rows ahead of time) does not apply: use `padding_free`.
        skip_invalid_rows (`bool`, *optional*, defaults to `False`):
            If `True`, rows that break the data contract are skipped, counted and reported (logged and kept in
            `trainer.skip_reports`) instead of raising an error naming the row and the field.

    The prefix lengths and RTO positions are drawn from `seed` (see [`DeRTaCollator`]); resuming from a checkpoint
    draws the same ones as an uninterrupted run.
    """

    # TRL's default (checkpointing on) under transformers 5's name, so that a plain DeRTaConfig raises no deprecation
    # warning; `gradient_checkpointing` is still honoured (with transformers' warning) when set
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of `activation_checkpointing`."},
    )
    activation_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Trade compute for memory (default: on, as in TRL)."},
    )
    refusal_text: str = field(
        default="Sorry",
        metadata={"help": "Refusal whose first token (at the start of an answer) is the RTO target."},
    )
    harmful_prefix: bool = field(
        default=True,
        metadata={"help": "Train MLE on the safe answer after a harmful prefix of sampled length."},
    )
    rto: bool = field(
        default=True,
        metadata={
            "help": "Add Reinforced Transition Optimization: refusal token as target at every harmful position."
        },
    )
    rto_weight: float = field(
        default=1.0,
        metadata={"help": "Weight λ of the RTO term in the loss."},
    )
    prefix_length_sampling: str = field(
        default="uniform",
        metadata={"help": "How the harmful prefix length is drawn.", "choices": list(PREFIX_SAMPLING)},
    )
    empty_prefix_prob: float = field(
        default=0.0,
        metadata={"help": "Probability of an empty harmful prefix, drawn before the length."},
    )
    rto_position_keep: float = field(
        default=1.0,
        metadata={"help": "Fraction of harmful positions that get the RTO target (1.0 = every position)."},
    )
    derta_form: str = field(
        default="fused",
        metadata={
            "help": "'fused' (one tree-masked sequence per harmful row, same loss as 'naive'; sdpa or eager attention, "
            "else falls back to naive) or 'naive' (two sequences per harmful row).",
            "choices": list(DERTA_FORMS),
        },
    )
    skip_invalid_rows: bool = field(
        default=False,
        metadata={"help": "Skip, count and report invalid rows instead of raising an error naming row and field."},
    )

    def __post_init__(self):
        if not self.refusal_text or not self.refusal_text.strip():
            raise ValueError("DeRTaConfig field 'refusal_text' is empty; set it to a refusal such as 'Sorry'.")
        if self.prefix_length_sampling not in PREFIX_SAMPLING:
            raise ValueError(
                f"DeRTaConfig field 'prefix_length_sampling' must be one of {PREFIX_SAMPLING}, "
                f"got {self.prefix_length_sampling!r}."
            )
        if not 0.0 <= self.empty_prefix_prob <= 1.0:
            raise ValueError(f"DeRTaConfig field 'empty_prefix_prob' must be in [0, 1], got {self.empty_prefix_prob}.")
        if not 0.0 < self.rto_position_keep <= 1.0:
            raise ValueError(f"DeRTaConfig field 'rto_position_keep' must be in (0, 1], got {self.rto_position_keep}.")
        if self.derta_form not in DERTA_FORMS:
            raise ValueError(f"DeRTaConfig field 'derta_form' must be one of {DERTA_FORMS}, got {self.derta_form!r}.")
        if self.rto_weight < 0:
            raise ValueError(f"DeRTaConfig field 'rto_weight' must be >= 0, got {self.rto_weight}.")
        if self.packing:
            raise ValueError(
                "DeRTaConfig field 'packing': DeRTa draws its sequences per batch (a new harmful prefix each time a "
                "row is batched), so dataset rows cannot be packed ahead of time. Use `padding_free=True`, which puts "
                "each batch's sequences in one row separated by position ids."
            )
        if self.loss_type not in ("nll", "dft"):
            raise ValueError(f"DeRTa trains with `loss_type` 'nll' or 'dft'; got {self.loss_type!r}.")
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        super().__post_init__()
