"""`DeRTaTrainer`: Decoupled Refusal Training as a drop-in `SFTTrainer`."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset, IterableDataset
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging
from trl import SFTTrainer
from trl.trainer.utils import create_model_from_path, get_config_model_id

from ..data import (
    TOKENIZED_COLUMNS,
    EmptyDatasetError,
    SkipReport,
    prepare_preference_dataset,
    refusal_token_from_data,
    refusal_token_id,
    sft_rows_to_contract,
)
from ..hub.cards import derta_model_card
from ..hub.metadata import DERTA_FIELDS, card_hyperparameters, is_adapter
from ..hub.papers import DERTA_PAPER
from ..hub.trainer import HubPublishingMixin
from ..models import (
    arguments_set,
    from_pretrained_4bit_experts,
    load_tokenizer,
    quantizes_experts,
    resolve_model_name,
)
from ..prefix_cache import attention_window
from ..quant import resolve_all_linear
from .collator import BENIGN, FUSED, HARMFUL_PREFIX, RTO, DeRTaCollator
from .config import DeRTaConfig


if TYPE_CHECKING:
    from ..eval.report import SafetyReport

logger = logging.get_logger(__name__)

COUNTERS_FILE = "derta_counters.json"
# Safe answers (of harmful rows) read to find how a refusal really starts in the data
_REFUSAL_SAMPLE = 2000


def _first_row(dataset: Dataset | IterableDataset | None) -> dict[str, Any] | None:
    if dataset is None:
        return None
    if isinstance(dataset, Dataset):
        return dataset[0] if len(dataset) else None
    return next(iter(dataset), None)


def _check_not_empty(dataset: Any, name: str) -> None:
    if isinstance(dataset, dict):
        for key, value in dataset.items():
            _check_not_empty(value, key)
    elif isinstance(dataset, (Dataset, IterableDataset)) and _first_row(dataset) is None:
        raise EmptyDatasetError(f"The {name} dataset is empty: DeRTaTrainer needs at least one row.")


def _load_with_4bit_experts(
    model: str, args: DeRTaConfig, processing_class: Any, quantization_config: Any
) -> tuple[str | PreTrainedModel, Any, Any]:
    """
    A fused-expert MoE (Mixtral, Qwen-MoE, ...) named for a bitsandbytes 4-bit load is loaded here as `SFTTrainer`
    would (TRL's `create_model_from_path`, `model_init_kwargs`) but with its experts in 4-bit too
    ([`~hf_safety.models.from_pretrained_4bit_experts`]); TRL alone leaves them 16-bit. Anything else is returned as
    it came, for `SFTTrainer` to load.
    """
    kwargs = dict(args.model_init_kwargs or {})
    config = quantization_config if quantization_config is not None else kwargs.get("quantization_config")
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    if not quantizes_experts(
        model, config, trust_remote_code=kwargs["trust_remote_code"], revision=kwargs.get("revision")
    ):
        return model, processing_class, quantization_config
    if quantization_config is not None and "quantization_config" in kwargs:
        raise ValueError("`quantization_config` is set both as a trainer argument and in `args.model_init_kwargs`")
    kwargs["quantization_config"] = config
    if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):  # as SFTTrainer: one copy per process
        kwargs["device_map"] = None
    loaded = from_pretrained_4bit_experts(create_model_from_path, model, **kwargs)
    if processing_class is None:
        processing_class = load_tokenizer(
            model, trust_remote_code=kwargs["trust_remote_code"], revision=kwargs.get("revision")
        )
    return loaded, processing_class, None


def _fused_form_support(model: PreTrainedModel) -> tuple[str | None, int | None]:
    """Why `model` cannot train DeRTa's fused form (`None` when it can), and the attention window its mask needs."""
    config = model.config.get_text_config()
    implementation = config._attn_implementation
    if implementation not in ("sdpa", "eager"):
        return (
            f"attn_implementation={implementation!r} cannot take a custom 4-D attention mask (use sdpa or eager)",
            None,
        )
    if getattr(config, "output_router_logits", False):
        return "the router load-balancing loss needs a 2-D padding mask", None
    layer_types = set(getattr(config, "layer_types", None) or [])
    if len(layer_types) > 1 or not layer_types <= {"full_attention", "sliding_attention"}:
        return f"its layers use attention types {sorted(layer_types)}; one 4-D mask cannot serve them", None
    return None, attention_window(model)


class _CollatorEpochCallback(TrainerCallback):
    """Tells the collator which epoch starts, so its draws are reproducible and survive resume."""

    def __init__(self, trainer: DeRTaTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        if isinstance(self.trainer.data_collator, DeRTaCollator):
            self.trainer.data_collator.set_epoch(int(state.epoch or 0))


class DeRTaTrainer(HubPublishingMixin, SFTTrainer):
    """
    Trainer for Decoupled Refusal Training ([DeRTa](https://huggingface.co/papers/2407.09121)): a drop-in for
    [`~trl.SFTTrainer`] that teaches a model to refuse at any point of a harmful answer, not only at its start.

    It takes the same arguments as `SFTTrainer` (a model id or model, `peft_config`, `quantization_config`,
    `processing_class`, callbacks, eval datasets) and preference data in TRL's format: `prompt`, `chosen` (the safe
    answer) and `rejected` (the harmful answer; empty for benign rows), text or conversational; rows of a `messages`
    column are benign SFT rows. The data are validated (an error names the row and the field, or
    `skip_invalid_rows=True` skips and reports) and tokenized at init; [`DeRTaCollator`] then builds, fresh for every
    batch, the harmful-prefix MLE sequences and the RTO sequences. The loss is
    `(Σ MLE NLL + rto_weight · Σ RTO NLL) / num_items_in_batch`, computed from TRL's fused LM head (no full logits),
    exact across gradient accumulation and devices. `mle_loss`, `rto_loss`, `rto_refusal_accuracy` (share of RTO
    positions where the refusal token is the top-1 prediction), the mean harmful-prefix length and the number of
    sequences of each kind are logged under `derta/` (a fused sequence, `derta_form="fused"`, counts as one of each).

    Example:
    ```python
    >>> from datasets import Dataset
    >>> from hf_safety import DeRTaConfig, DeRTaTrainer

    >>> dataset = Dataset.from_list([{
    ...     "prompt": [{"role": "user", "content": "How do I pick a lock?"}],
    ...     "chosen": [{"role": "assistant", "content": "Sorry, I can't help with that."}],
    ...     "rejected": [{"role": "assistant", "content": "First, insert a tension wrench..."}],
    ... }])
    >>> trainer = DeRTaTrainer(model="meta-llama/Meta-Llama-3-8B-Instruct", args=DeRTaConfig("out"),
    ...                        train_dataset=dataset)
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "sft", "hf-safety", "derta"]
    _name = "DeRTa"
    _paper = DERTA_PAPER

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: DeRTaConfig | TrainingArguments | None = None,
        data_collator: DeRTaCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        quantization_config: Any | None = None,
        peft_config: Any | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
        formatting_func: Callable[[dict], str] | None = None,
    ):
        # The base model as the user named it (a Hub id, a folder, or a registered name such as toy://...), for cards
        self._base_model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        if isinstance(model, str):
            model = resolve_model_name(model)
        if args is None:
            args = DeRTaConfig(f"{self._base_model_name.split('/')[-1]}-DeRTa")
        elif not isinstance(args, DeRTaConfig):
            dict_args = args.to_dict()
            dict_args["hub_token"] = args.hub_token  # to_dict hides the hub_token
            args = DeRTaConfig(**dict_args)
        if processing_class is not None and isinstance(processing_class, ProcessorMixin):
            raise TypeError("DeRTaTrainer supports text models only; pass a tokenizer as `processing_class`.")
        _check_not_empty(train_dataset, "train")
        _check_not_empty(eval_dataset, "eval")
        if isinstance(model, str):
            model, processing_class, quantization_config = _load_with_4bit_experts(
                model, args, processing_class, quantization_config
            )
        if peft_config is not None and not isinstance(model, str):
            peft_config = resolve_all_linear(peft_config, model)  # "all-linear": no LoRA on a 4-bit MoE's router

        self.skip_reports: dict[str, SkipReport] = {}
        self.refusal_token_id: int | None = None
        self._refusal_note = ""
        self._sequence_counts = {"benign": 0, "harmful_prefix": 0, "rto": 0}
        # DeRTa's collator packs each batch itself (every sequence within max_length): SFTTrainer's padding-free
        # checks and collator do not apply. A model loaded above has used `model_init_kwargs` (SFTTrainer would warn
        # that they are ignored). Both are the user's again after SFTTrainer's init.
        padding_free = args.padding_free
        consumed = {} if isinstance(model, str) else {"model_init_kwargs": None}
        with arguments_set(args, padding_free=False, **consumed):
            super().__init__(
                model=model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                callbacks=callbacks,
                optimizers=optimizers,
                optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
                quantization_config=quantization_config,
                peft_config=peft_config,
                compute_loss_func=compute_loss_func,
                compute_metrics=compute_metrics,
                preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                formatting_func=formatting_func,
            )
        self.padding_free = padding_free
        if self._skip_prepare_dataset:  # the user's own `input_ids`/`labels`, used as they are (as SFTTrainer does)
            self.train_dataset = self._contract_from_user_tokens(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self._contract_from_user_tokens(v, k) for k, v in self.eval_dataset.items()}
            else:
                self.eval_dataset = self._contract_from_user_tokens(self.eval_dataset, "eval")
        if self.refusal_token_id is None and args.rto and self._refusal_needed():
            # a dataset tokenized by the user (skip_prepare_dataset, or already-tokenized columns)
            self.refusal_token_id = refusal_token_id(self._tokenizer, args.refusal_text)
            self._refusal_note = "derived from refusal_text"
        self.derta_form, window = args.derta_form, None
        if args.derta_form == "fused":
            reason, window = _fused_form_support(self.model)
            if reason is not None:
                logger.warning(f"DeRTa: derta_form='fused' falls back to 'naive': {reason}.")
                self.derta_form = "naive"
        # SFTTrainer set the pad token on the tokenizer and the model; replace its collator with DeRTa's
        self.data_collator = data_collator or DeRTaCollator(
            pad_token_id=self._tokenizer.pad_token_id,
            refusal_token_id=self.refusal_token_id,
            harmful_prefix=args.harmful_prefix,
            rto=args.rto and self.refusal_token_id is not None,
            prefix_sampling=args.prefix_length_sampling,
            empty_prefix_prob=args.empty_prefix_prob,
            rto_position_keep=args.rto_position_keep,
            max_length=args.max_length,
            seed=args.seed,
            pad_to_multiple_of=args.pad_to_multiple_of,
            return_sequence_kind=True,
            derta_form=self.derta_form,
            sliding_window=window,
            padding_free=padding_free,
        )
        self.add_callback(_CollatorEpochCallback(self))
        self._announce()

    def _contract_from_user_tokens(self, dataset, dataset_name):
        """With `skip_prepare_dataset=True`: the user's tokenized rows (`input_ids`, optional `labels`) as benign rows
        of the data contract, neither truncated nor re-tokenized."""
        first = _first_row(dataset)
        if first is None or set(TOKENIZED_COLUMNS) <= set(first) or "input_ids" not in first:
            return dataset
        prepared, report = sft_rows_to_contract(
            dataset,
            max_length=None,
            skip_invalid_rows=self.args.skip_invalid_rows,
            dataset_name=dataset_name,
            num_proc=self.args.dataset_num_proc,
        )
        self.skip_reports[dataset_name] = report
        return prepared

    def _refusal_needed(self) -> bool:
        """Whether some training row may be harmful (unknown for a streamed or user-tokenized dataset)."""
        report = self.skip_reports.get("train")
        return report is None or report.num_harmful is None or report.num_harmful > 0

    def _announce(self) -> None:
        """Prints, once, what DeRTa will train: the refusal token and the rows of each kind, with a loud warning when
        DeRTa is on but the data have no harmful row."""
        args, lines = self.args, []
        if self.refusal_token_id is not None:
            text = self._tokenizer.decode([self.refusal_token_id])
            lines.append(
                f"DeRTa refusal token (RTO target): {text!r} (id {self.refusal_token_id}); {self._refusal_note}"
            )
        for name, report in self.skip_reports.items():
            if report.num_harmful is None:
                counts = "streamed: rows are counted as they are batched (derta/num_*_sequences in the logs)"
            else:
                counts = f"{report.num_harmful} harmful rows, {report.num_benign} benign rows"
            extra = f"; {report.num_skipped} skipped" if report.skipped else ""
            if report.truncated:
                extra += f"; {report.num_truncated} cut to fit max_length={args.max_length}"
            lines.append(f"DeRTa {name} dataset: {counts}{extra}")
        train = self.skip_reports.get("train")
        if (args.rto or args.harmful_prefix) and train is not None and train.num_harmful == 0:
            warning = (
                f"DeRTa is on (harmful_prefix={args.harmful_prefix}, rto={args.rto}) but the train dataset has no "
                f"harmful row (0 of {train.num_harmful + train.num_benign} rows have a non-empty `rejected`): this run "
                "trains plain SFT. Is the harmful answer in a column named `rejected`?"
            )
            logger.warning(warning)
            lines.append(f"WARNING: {warning}")
        if lines and self.is_world_process_zero():
            print("\n".join(lines))

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if isinstance(dataset, Dataset) and dataset.format["type"] == "custom":
            raise ValueError(
                "DeRTaTrainer cannot prepare a dataset that uses `Dataset.with_transform()` (as SFTTrainer cannot): "
                "preparation calls `Dataset.map()`, which would bake the transform into the tokenized columns. "
                "Materialize the transform with `Dataset.map()` before building the trainer."
            )
        first = _first_row(dataset)
        if first is None:
            raise EmptyDatasetError(f"The {dataset_name} dataset is empty: DeRTaTrainer needs at least one row.")
        if set(TOKENIZED_COLUMNS) <= set(first):  # already prepared
            return dataset
        if "chosen" in first:  # the data contract: preference rows (and `messages` rows mixed in)
            if formatting_func is not None:
                raise ValueError(
                    "`formatting_func` applies to SFT-format data (text, prompt-completion, messages); DeRTa's "
                    "preference rows (`prompt`, `chosen`, `rejected`) are used as they are."
                )
            if args.completion_only_loss is False:
                logger.warning(
                    "completion_only_loss=False does not apply to preference rows: DeRTa trains on the answers."
                )
            prepared, report = prepare_preference_dataset(
                dataset,
                self._tokenizer,
                max_length=args.max_length,
                skip_invalid_rows=args.skip_invalid_rows,
                with_word_starts=args.prefix_length_sampling == "word_boundary",
                num_proc=args.dataset_num_proc,
                dataset_name=dataset_name,
                truncation_mode=args.truncation_mode,
                assistant_only_loss=args.assistant_only_loss,
                chat_template=self.chat_template,
            )
        else:  # any SFTTrainer format, prepared by SFTTrainer's own pipeline: benign rows
            # max_length is applied afterwards, so that a row truncated to nothing is an error, not a silent drop
            saved = args.max_length, args.shuffle_dataset
            args.max_length, args.shuffle_dataset = None, False
            try:
                prepared = super()._prepare_dataset(
                    dataset, processing_class, args, False, formatting_func, dataset_name
                )
            finally:
                args.max_length, args.shuffle_dataset = saved
            field = next(
                (c for c in ("prompt", "messages", "conversations", args.dataset_text_field) if c in first),
                "input_ids",
            )
            prepared, report = sft_rows_to_contract(
                prepared,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                skip_invalid_rows=args.skip_invalid_rows,
                dataset_name=dataset_name,
                field=field,
                num_proc=args.dataset_num_proc,
            )
        self.skip_reports[dataset_name] = report
        if dataset_name == "train" and self.refusal_token_id is None:
            self._set_refusal_token(args, first, prepared, report)
        if args.shuffle_dataset:
            prepared = prepared.shuffle(seed=args.seed)
        return prepared

    def _set_refusal_token(
        self, args: DeRTaConfig, first: dict[str, Any], prepared: Dataset | IterableDataset, report: SkipReport
    ):
        """The RTO target: `refusal_text`'s first token in this dataset's format (chat template or text), then
        matched against how the safe answers of harmful rows really start (see `refusal_token_from_data`)."""
        if not args.rto:
            return
        conversational = isinstance(first.get("prompt") or first.get("messages"), list)
        try:
            probe = refusal_token_id(self._tokenizer, args.refusal_text, conversational)
        except ValueError:
            if report.num_harmful == 0:  # nothing to refuse: the target is never used
                return
            raise
        rows = prepared
        if isinstance(prepared, Dataset):
            rows = prepared.select(range(min(len(prepared), 20 * _REFUSAL_SAMPLE)))
        firsts = []
        for row in rows:
            if row["rejected_ids"] and row["chosen_ids"]:
                firsts.append(row["chosen_ids"][0])
            if len(firsts) >= _REFUSAL_SAMPLE or (isinstance(prepared, IterableDataset) and len(firsts) >= 256):
                break
        if isinstance(prepared, IterableDataset):  # the peek above went through the lazy checks: count from scratch
            report.num_rows, report.skipped, report.truncated = 0, [], []
        if firsts:
            self.refusal_token_id, self._refusal_note = refusal_token_from_data(
                self._tokenizer, args.refusal_text, probe, firsts
            )
        else:
            self.refusal_token_id, self._refusal_note = probe, "derived from refusal_text"

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["row_index", *TOKENIZED_COLUMNS, "chosen_labels", "rejected_word_starts"]

    def get_eval_dataloader(self, eval_dataset=None):
        # Evaluation draws the same prefixes every time, so eval losses are comparable across steps
        train_collator = self.data_collator
        if isinstance(train_collator, DeRTaCollator):
            self.data_collator = dataclasses.replace(train_collator, deterministic=True)
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _prepare_attention_mask(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Returns the number of input tokens; makes the fused form's boolean 4-D mask additive for eager attention."""
        mask = inputs.get("attention_mask")
        if mask is None:  # padding-free, naive form: one row (as SFTTrainer counts it)
            return torch.tensor(inputs["position_ids"].numel(), device=inputs["position_ids"].device)
        if mask.dim() != 4:
            return mask.sum()
        if mask.dtype == torch.bool and self.model.config.get_text_config()._attn_implementation == "eager":
            dtype = self.model.dtype  # eager attention adds the mask to its scores
            inputs["attention_mask"] = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        attends_to_itself = mask.diagonal(dim1=-2, dim2=-1)  # every token but padding
        return (attends_to_itself if mask.dtype == torch.bool else attends_to_itself == 0).sum()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        kinds = inputs.pop("sequence_kind", None)
        prefix_lengths = inputs.pop("harmful_prefix_length", None)
        label_is_rto = inputs.pop("label_is_rto", None)
        num_input_tokens = self._prepare_attention_mask(inputs)
        inputs["use_cache"] = False
        if self.aux_loss_enabled:
            inputs["output_router_logits"] = True

        if self.compute_loss_func is not None:
            # The user's loss replaces DeRTa's (as in SFTTrainer): it gets the full logits and the labels, RTO targets
            # included, but no `rto_weight`; the fused outputs feed the metrics
            labels = inputs["labels"]
            loss = self.compute_loss_func(
                model(**{k: v for k, v in inputs.items() if k != "labels"}),
                labels,
                num_items_in_batch=num_items_in_batch,
            )
            with torch.no_grad():
                outputs = model(**inputs, fused_lm_head=True)
            nll = None
        elif self.label_smoother is not None:
            # Label smoothing needs the full logits (as in SFTTrainer); the fused outputs still feed the metrics
            logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, :-1].float()
            with torch.no_grad():
                outputs = model(**inputs, fused_lm_head=True)
            log_probs = torch.log_softmax(logits, dim=-1)
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
            epsilon = self.args.label_smoothing_factor
            nll = -((1 - epsilon) * picked + epsilon * log_probs.mean(-1)) * mask  # transformers' LabelSmoother
        else:
            outputs = model(**inputs, fused_lm_head=True)
            nll = -outputs.log_probs  # (batch, seq_len - 1), zero where the label is -100
            if self.args.loss_type == "dft":  # DFT (https://huggingface.co/papers/2508.05629), as in SFTTrainer
                nll = nll * outputs.log_probs.exp().detach()
        rto_tokens = torch.zeros_like(outputs.label_mask, dtype=torch.bool)
        if label_is_rto is not None:  # the fused form: RTO and MLE labels share a sequence
            rto_tokens = outputs.label_mask.bool() & label_is_rto[:, 1:]
        elif kinds is not None:
            rto_tokens = outputs.label_mask.bool() & (kinds == RTO)[:, None]
        if nll is not None:
            weights = torch.where(rto_tokens, self.args.rto_weight, 1.0)
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (nll * weights).sum() / torch.as_tensor(num_tokens).clamp(min=1)
        # Like `Trainer.compute_loss`: `num_items_in_batch` counts every rank's tokens and DDP averages the gradients
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self._tp_size)
        if self.aux_loss_enabled:
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss / steps

        nll = -outputs.log_probs.detach()
        self._log_metrics(mode, num_input_tokens, outputs, nll, rto_tokens, kinds, prefix_lengths)
        if return_outputs:
            with torch.no_grad():  # the logits, for `compute_metrics` (an extra forward, as in SFTTrainer)
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        return (loss, outputs) if return_outputs else loss

    def _log_metrics(self, mode, num_input_tokens, outputs, nll, rto_tokens, kinds, prefix_lengths):
        # One gather for every count and sum of the step
        mask = outputs.label_mask.bool()
        mle_tokens = mask & ~rto_tokens
        if kinds is None:  # a collator without sequence kinds: every sequence counts as benign
            kinds = torch.full((mask.shape[0],), BENIGN, device=mask.device)
            prefix_lengths = torch.zeros_like(kinds)
        # a fused sequence counts as one harmful-prefix and one RTO sequence
        is_prefix = (kinds == HARMFUL_PREFIX) | (kinds == FUSED)
        is_rto = (kinds == RTO) | (kinds == FUSED)
        sums = torch.stack(
            [
                mask.sum(),
                outputs.entropy.detach().sum(),
                outputs.is_top1.sum(),
                mle_tokens.sum(),
                (nll * mle_tokens).sum(),
                rto_tokens.sum(),
                (nll * rto_tokens).sum(),
                (outputs.is_top1.bool() & rto_tokens).sum(),
                num_input_tokens,
                (prefix_lengths * is_prefix).sum(),
                (kinds == BENIGN).sum(),
                is_prefix.sum(),
                is_rto.sum(),
            ]
        ).float()
        totals = self.accelerator.gather_for_metrics(sums[None]).sum(0).tolist()
        n, entropy, top1, n_mle, mle_nll, n_rto, rto_nll, rto_top1, n_input, prefix_sum, *counts = totals
        metrics = self._metrics[mode]
        metrics["entropy"].append(entropy / n if n else 0.0)
        metrics["mean_token_accuracy"].append(top1 / n if n else 0.0)
        if n_mle:
            metrics["derta/mle_loss"].append(mle_nll / n_mle)
        if n_rto:
            metrics["derta/rto_loss"].append(rto_nll / n_rto)
            metrics["derta/rto_refusal_accuracy"].append(rto_top1 / n_rto)
        if mode == "train":
            self._total_train_tokens += int(n_input) // self._tp_size
            for name, count in zip(self._sequence_counts, counts):
                self._sequence_counts[name] += int(count)
                metrics[f"derta/num_{name}_sequences"] = [self._sequence_counts[name]]
            if counts[1]:
                metrics["derta/mean_prefix_length"].append(prefix_sum / counts[1])
        metrics["num_tokens"] = [self._total_train_tokens]
        if self.aux_loss_enabled:
            metrics["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss.detach()).mean().item())

    # -- checkpoints: counters that survive resume, no token on disk ---------------------------------------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            counters = {"num_tokens": self._total_train_tokens, "sequences": self._sequence_counts}
            with open(os.path.join(folder, COUNTERS_FILE), "w") as f:
                json.dump(counters, f)

    def _load_rng_state(self, checkpoint):
        super()._load_rng_state(checkpoint)
        path = os.path.join(checkpoint, COUNTERS_FILE) if checkpoint else None
        if path and os.path.isfile(path):  # `num_tokens` and `derta/num_*_sequences` go on from the checkpoint
            with open(path) as f:
                counters = json.load(f)
            self._total_train_tokens = counters["num_tokens"]
            self._sequence_counts.update(counters["sequences"])

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
        eval_report: SafetyReport | None = None,
        license: str | None = None,
    ):
        """
        Writes `README.md` in `output_dir` (main process only): hf_safety's DeRTa card (see
        [`~hf_safety.hub.derta_model_card`]) with the method and paper, the base model as it was given to the trainer
        (a Hub id in the metadata; a local folder by its name only), `model_name` (default: the Hub model id or the
        output folder's name), `dataset_name`, the DeRTa hyper-parameters and, when given, `eval_report` (a
        [`~hf_safety.eval.SafetyReport`]) as a table and as the `model-index`. No token and no local path is written.
        """
        if not self.is_world_process_zero():
            return
        model_name = model_name or self.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        card = derta_model_card(
            base_model=self._base_model_name,
            model_name=model_name,
            hub_model_id=self.hub_model_id,
            dataset_names=[dataset_name] if isinstance(dataset_name, str) else dataset_name or (),
            # the form that trained (after any fallback to naive), not only the one asked for
            hyperparameters=card_hyperparameters(self.model, self.args, DERTA_FIELDS, derta_form=self.derta_form),
            eval_report=eval_report,
            adapter=is_adapter(self.model),
            license=license,
            tags=[*self._tag_names, *([tags] if isinstance(tags, str) else tags or [])],
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))
