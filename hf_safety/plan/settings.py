"""What a plan is: the settings it plans for ([`PlanSettings`]) and its result ([`MemoryPlan`], its [`Term`]s and
[`Suggestion`]s), with the units and the modelled methods, quantizations and optimizers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .shapes import ModelShapes, PlanError


GIB = 1024**3
METHODS = ("derta", "seas", "sft")
QUANTS = ("nf4", "bf16")
# Optimizer state bytes per trainable parameter; None = two states in the parameter's own dtype (torch AdamW keeps
# `exp_avg`/`exp_avg_sq` as `zeros_like(param)`). bitsandbytes 32-bit states are fp32 whatever the parameter dtype;
# 8-bit states are 1 byte + one fp32 absmax per 256-block (tensors under 4096 elements stay 32-bit: not modelled).
# Paged optimizers count in full: they only move to CPU under memory pressure.
OPTIMIZER_STATE_BYTES: dict[str, float | None] = {
    "adamw_torch": None,
    "adamw_torch_fused": None,
    "paged_adamw_32bit": 8.0,
    "adamw_bnb_8bit": 2 * (1 + 4 / 256),
    "adamw_8bit": 2 * (1 + 4 / 256),
    "paged_adamw_8bit": 2 * (1 + 4 / 256),
    "lion_32bit": 4.0,
    "paged_lion_32bit": 4.0,
    "lion_8bit": 1 + 4 / 256,
    "paged_lion_8bit": 1 + 4 / 256,
    "sgd": 0.0,
}


@dataclass
class PlanSettings:
    """
    What [`estimate_memory`] plans for: the training settings that move the peak (the flags of `hf-safety plan`).

    Defaults: the QLoRA settings of this project's recipes (NF4 + double quantization, LoRA r 16 with dropout 0.05 on
    every linear layer, checkpointing, seq-len 2048) at micro-batch 1, TrainingArguments' optimizer, and SEASConfig's
    attack-stage settings.
    """

    method: str = field(
        default="derta",
        metadata={
            "help": "derta (SFT on DeRTa's two sequences per harmful row), seas (two models, judge, DPO), sft.",
            "choices": list(METHODS),
        },
    )
    seq_len: int = field(default=2048, metadata={"help": "Longest sequence (max_length); batches are padded to it."})
    micro_batch: int = field(
        default=1,
        metadata={"help": "Rows per device per step (per_device_train_batch_size), before DeRTa/DPO expand them."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank; 0 = full fine-tuning."})
    lora_dropout: float = field(
        default=0.05, metadata={"help": "LoRA dropout: > 0 saves a masked copy of each adapted layer's input."}
    )
    lora_experts: bool = field(
        default=True,
        metadata={"help": "MoE: LoRA on the experts too (all-linear); False: attention (+ dense MLP) only."},
    )
    quant: str = field(default="nf4", metadata={"help": "Base weights: nf4 (QLoRA) or bf16.", "choices": list(QUANTS)})
    double_quant: bool = field(default=True, metadata={"help": "NF4 double quantization (use_bnb_nested_quant)."})
    experts_bf16: bool = field(
        default=False,
        metadata={
            "help": "MoE: experts stay bf16 (stock transformers 5 + bitsandbytes) instead of hf_safety.quant's 4-bit."
        },
    )
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Activation checkpointing per block."})
    optim: str = field(
        default="adamw_torch_fused",
        metadata={"help": "Optimizer (TrainingArguments.optim).", "choices": list(OPTIMIZER_STATE_BYTES)},
    )
    fused_lm_head: bool = field(
        default=True,
        metadata={"help": "TRL 1.16's fused LM head (DeRTa, SFT, DPO): no full logits. False: full fp32 logits."},
    )
    padded: bool = field(
        default=True, metadata={"help": "Batches carry a padding mask: SDPA then repeats the KV heads (GQA)."}
    )
    sequences_per_row: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per row in a micro-batch; default: derta 2 (harmful row), seas 2 (DPO pair), sft 1."
        },
    )
    num_gpus: int = field(
        default=1, metadata={"help": "GPUs with FSDP FULL_SHARD (weights, grads, optimizer sharded)."}
    )
    judge: str = field(default="llama-guard-3", metadata={"help": "SEAS: the judge (a load_judge name or spec)."})
    judge_quant: str = field(
        default="bf16", metadata={"help": "SEAS: judge weights, bf16 or nf4.", "choices": list(QUANTS)}
    )
    red_team_model: str | None = field(default=None, metadata={"help": "SEAS: the red team model (default: --model)."})
    generation_batch_size: int = field(default=16, metadata={"help": "SEAS: prompts per generate call."})
    num_adversarial_prompts: int = field(default=4, metadata={"help": "SEAS: n, red team samples per seed."})
    num_responses: int = field(default=4, metadata={"help": "SEAS: m, target samples per prompt."})
    red_team_prompt_tokens: int = field(
        default=512,
        metadata={"help": "SEAS: red team prompt length (k example prompts + instruction; an assumption)."},
    )
    red_team_max_new_tokens: int = field(default=128, metadata={"help": "SEAS: longest adversarial prompt."})
    target_max_new_tokens: int = field(default=256, metadata={"help": "SEAS: longest target answer."})
    judge_batch_size: int = field(default=16, metadata={"help": "SEAS: pairs per judge call."})
    judge_prompt_tokens: int = field(
        default=400, metadata={"help": "SEAS: judge template length (Llama Guard 3 categories; an assumption)."}
    )
    judge_max_new_tokens: int = field(
        default=64, metadata={"help": "SEAS: judge generation length (LlamaGuardJudge)."}
    )
    cuda_context_gib: float = field(
        default=1.0, metadata={"help": "CUDA context + cuBLAS/NCCL workspaces, outside torch's allocator."}
    )
    fragmentation: float = field(
        default=0.05, metadata={"help": "Allocator margin: fraction of the allocated peak lost to fragmentation."}
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise PlanError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("quant", "judge_quant"):
            if getattr(self, name) not in QUANTS:
                raise PlanError(f"{name} must be one of {QUANTS}, got {getattr(self, name)!r}")
        if self.optim not in OPTIMIZER_STATE_BYTES:
            raise PlanError(f"optim {self.optim!r} is not modelled; one of: {', '.join(OPTIMIZER_STATE_BYTES)}")
        for name in ("seq_len", "micro_batch", "num_gpus", "generation_batch_size", "judge_batch_size"):
            if getattr(self, name) < 1:
                raise PlanError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lora_r < 0:
            raise PlanError(f"lora_r must be >= 0 (0 = full fine-tuning), got {self.lora_r}")
        if self.lora_r == 0 and self.quant == "nf4":
            raise PlanError("4-bit weights cannot be fully fine-tuned: use LoRA (--lora-r 16) or --quant bf16")
        if not 0 <= self.lora_dropout < 1:
            raise PlanError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")

    @property
    def rows_to_sequences(self) -> int:
        if self.sequences_per_row is not None:
            return self.sequences_per_row
        return 1 if self.method == "sft" else 2

    def replace(self, **changes) -> PlanSettings:
        return dataclasses.replace(self, **changes)


@dataclass
class Term:
    """One line of a plan: `bytes` of GPU memory, a `label` and `how` it was computed."""

    key: str
    label: str
    bytes: int
    how: str

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass
class Suggestion:
    """A change of settings and the plan it gives."""

    change: str
    settings: dict[str, Any]
    total: int
    fits: bool

    def __str__(self) -> str:
        return f"{self.change}: {self.total / GIB:.1f} GiB{' (fits)' if self.fits else ''}"


@dataclass
class MemoryPlan:
    """
    Estimated peak GPU memory of one training run, per GPU, by term (bytes).

    `total` is what the GPU must hold: the terms plus the CUDA context and the allocator margin. `peak_allocated`
    leaves those two out: it is what `torch.cuda.max_memory_allocated()` would report, the figure to compare with a
    measured peak. For SEAS, the terms are those of the peak phase (`phase`); `phases` holds every phase's plan.
    """

    model: str
    method: str
    phase: str
    settings: PlanSettings
    weights: int = 0
    reference_weights: int = 0
    adapters: int = 0
    gradients: int = 0
    optimizer_states: int = 0
    activations: int = 0
    lm_head: int = 0
    workspace: int = 0
    judge: int = 0
    generation: int = 0
    cuda_context: int = 0
    allocator: int = 0
    how: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    phases: dict[str, MemoryPlan] = field(default_factory=dict, repr=False)
    shapes: ModelShapes | None = field(default=None, repr=False)
    context: dict[str, Any] = field(default_factory=dict, repr=False)

    _LABELS = {
        "weights": "weights",
        "reference_weights": "reference copies",
        "adapters": "LoRA adapters",
        "gradients": "gradients",
        "optimizer_states": "optimizer states",
        "activations": "activations",
        "lm_head": "LM head + loss",
        "workspace": "workspace",
        "judge": "judge weights",
        "generation": "generation",
        "cuda_context": "CUDA context",
        "allocator": "allocator margin",
    }

    @property
    def terms(self) -> list[Term]:
        """The non-zero terms, in table order."""
        labels = dict(self._LABELS)
        if self.settings.lora_r == 0:
            labels["adapters"] = "trainable params (in weights)"
        return [
            Term(key, labels[key], getattr(self, key), self.how.get(key, ""))
            for key in labels
            if getattr(self, key) or key in ("weights", "activations")
        ]

    @property
    def peak_allocated(self) -> int:
        """The peak torch's allocator would report (`torch.cuda.max_memory_allocated()`): no context, no margin."""
        return sum(term.bytes for term in self.terms if term.key not in ("cuda_context", "allocator"))

    @property
    def total(self) -> int:
        """What the GPU must hold: every term, with the CUDA context and the allocator margin."""
        return sum(term.bytes for term in self.terms)

    def fits(self, gpu_gb: float) -> bool:
        """Whether [`total`] fits a GPU of `gpu_gb` GiB (a "24 GB" card holds 24 GiB)."""
        return self.total <= gpu_gb * GIB

    def headroom(self, gpu_gb: float) -> int:
        return int(gpu_gb * GIB) - self.total

    def suggestions(self, gpu_gb: float | None = None) -> list[Suggestion]:
        """
        Changes that lower the peak, each with the total it gives: lower micro-batch or sequence length, gradient
        checkpointing, no LoRA dropout, 4-bit weights, smaller LoRA rank, 8-bit paged optimizer, the fused LM head,
        a smaller or 4-bit judge and smaller generation batches (SEAS), 4-bit experts (MoE), more GPUs with FSDP;
        then all the cheap ones together. With `gpu_gb`, `fits` says which fit; when the plan already fits, the
        largest micro-batch that still fits is offered instead.
        """
        from .suggest import _suggestions

        return _suggestions(self, gpu_gb)

    def to_dict(self, gpu_gb: float | None = None) -> dict[str, Any]:
        out = {
            "model": self.model,
            "method": self.method,
            "phase": self.phase,
            "settings": dataclasses.asdict(self.settings),
            "terms": {
                term.key: {"bytes": term.bytes, "gib": round(term.gib, 3), "how": term.how} for term in self.terms
            },
            "peak_allocated_bytes": self.peak_allocated,
            "total_bytes": self.total,
            "total_gib": round(self.total / GIB, 3),
            "notes": list(self.notes),
        }
        if self.phases:
            out["phases"] = {name: round(plan.total / GIB, 3) for name, plan in self.phases.items()}
        if gpu_gb is not None:
            out.update(
                gpu_gib=gpu_gb,
                fits=self.fits(gpu_gb),
                headroom_gib=round(self.headroom(gpu_gb) / GIB, 3),
                suggestions=[
                    dataclasses.asdict(s) | {"total_gib": round(s.total / GIB, 3)} for s in self.suggestions(gpu_gb)
                ],
            )
        return out

    def format_table(self, gpu_gb: float | None = None, suggestions: bool = True) -> str:
        """The plan as text: a header, the terms in GiB (one column per phase for SEAS), total, fit and suggestions."""
        from .cli import _format_table

        return _format_table(self, gpu_gb, suggestions)
