"""`SEASTrainer`: a `DPOTrainer` whose `train()` runs SEAS's rounds of red team vs target (arXiv 2408.02632)."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, gather_object
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import get_config_model_id

from ..eval.evaluator import JudgeLike, as_judge, describe_judge
from ..hub.cards import seas_model_card
from ..hub.metadata import DPO_FIELDS, SEAS_FIELDS, card_hyperparameters, is_adapter
from ..hub.papers import SEAS_PAPER
from ..hub.trainer import HubPublishingMixin
from ..models import arguments_set, load_model_and_tokenizer, resolve_model_name
from ..quant import resolve_all_linear
from .attack import ATTACK_LOG_FEATURES, AttackStats, distinct_ngrams, run_attack_stage
from .callback import SEASCallback, _RedTeamLogBridge
from .config import SEASConfig
from .pairs import build_red_team_pairs, build_target_pairs, mix_general_data, pair_counts
from .seeds import SeedPool


logger = logging.get_logger(__name__)

STATE_FILE = "seas_state.json"
RESULTS_FILE = "results.json"
STAGES = ("attack", "pairs", "red_team", "target")
SIDES = ("red_team", "target")


def iteration_dir(output_dir: str | os.PathLike, iteration: int) -> Path:
    """Where round `iteration` writes: the attack log, both pair sets and both models."""
    return Path(output_dir) / f"iteration_{iteration}"


def _load(
    model: Any, tokenizer: Any, args: SEASConfig, quantization_config: Any = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model given by name goes through the package's one loader (quantized with `quantization_config`)."""
    if not isinstance(model, str):
        if quantization_config is not None:
            raise ValueError("`quantization_config` applies to models given by name; this one is already loaded")
        if tokenizer is None:
            raise ValueError("pass the tokenizer (`processing_class` / `red_team_processing_class`) of a model object")
        return model, tokenizer
    kwargs = dict(args.model_init_kwargs or {})
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    device_map = kwargs.pop("device_map", None)
    if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):  # one copy per process, as in TRL
        device_map = {"": args.distributed_state.local_process_index} if quantization_config is not None else None
    elif quantization_config is not None and device_map is None and not torch.cuda.is_available():
        device_map = "cpu"
    loaded, loaded_tokenizer = load_model_and_tokenizer(
        resolve_model_name(model),
        tokenizer=tokenizer,
        dtype=kwargs.pop("dtype", "auto"),
        device_map=device_map,
        trust_remote_code=args.trust_remote_code,
        model_kwargs=kwargs,
    )
    return loaded, loaded_tokenizer


def _read_parquet(path: Path) -> Dataset:
    """A Dataset saved with `to_parquet`, empty ones included (`Dataset.from_parquet` fails on a file with no rows:
    a round whose attack gave no pairs), read in memory without going through the datasets cache."""
    import pyarrow.parquet as pq

    return Dataset(pq.read_table(path))


def _as_messages(pairs: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """Pairs of strings as conversational rows when the tokenizer has a chat template (as they were generated)."""
    if tokenizer.chat_template is None or not len(pairs) or not isinstance(pairs[0]["prompt"], str):
        return pairs
    return pairs.map(
        lambda row: {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
    )


def _load_weights(model: Any, folder: Path) -> None:
    """Loads the trainable weights saved in `folder` (a LoRA adapter, or a full model) into `model`, in place."""
    from safetensors.torch import load_file

    if (folder / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"), adapter_name="default")
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        from transformers.modeling_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model, folder, strict=False)
    else:
        model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)


def _refresh_reference(model: Any, ref_model: Any | None) -> None:
    """Makes the DPO reference the current iterate: a frozen copy of the weights (full fine-tuning), or the "ref"
    adapter as a copy of the trained "default" one (PEFT: the adapter-disabled base is not the previous iterate)."""
    if ref_model is not None:
        ref_model.load_state_dict(model.state_dict())
        return
    if "ref" not in model.peft_config:
        model.add_adapter("ref", model.peft_config["default"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".default." in name:
                model.get_parameter(name.replace(".default.", ".ref.")).copy_(param)
                model.get_parameter(name.replace(".default.", ".ref.")).requires_grad_(False)


class SEASTrainer(HubPublishingMixin, DPOTrainer):
    """
    Trainer for Self-Evolving Adversarial Safety optimization (SEAS, [paper](https://huggingface.co/papers/2408.02632)).

    A red team model R and a target model T improve each other over `args.num_iterations` rounds. In round i:

    1. **attack**: R_i writes `num_adversarial_prompts` prompts for each of `seeds_per_iteration` seed prompts (k
       example prompts of one type from the seed pool); T_i answers each `num_responses` times; the judge labels
       every answer. Saved as `iteration_i/attack_log.parquet`.
    2. **pairs**: [`build_red_team_pairs`] (seed prompt → the adversarial prompt with the highest unsafe rate over
       the one with the lowest) and [`build_target_pairs`] (adversarial prompt → a safe answer over an unsafe one),
       general preference data mixed in. Saved as `iteration_i/{red_team,target}_pairs.parquet`.
    3. **DPO red team**, then 4. **DPO target**: each side's own DPO run from its current weights, with the current
       weights as the reference (the previous iterate, as in the paper), saved in `iteration_i/{red_team,target}`.

    This trainer is the target's `DPOTrainer` (`trainer.model` is the target; `save_model`/`push_to_hub` publish it);
    the red team trains in a `DPOTrainer` of its own each round, its logs forwarded here with a `red_team/` prefix.
    Per-round metrics (`seas/*`) are logged to the trackers and written to `results.json`; [`SEASCallback`]s get
    the per-round events. A killed run, started again with the same arguments and `resume_from_checkpoint=True`,
    resumes after the last finished stage (and inside a DPO run, from its last checkpoint).

    Args:
        model (`str` or `PreTrainedModel`): the target T0 (a Hub id or local folder is loaded by the package's loader).
        red_team_model (`str` or `PreTrainedModel`): the red team R0.
        args ([`SEASConfig`], *optional*): the settings.
        train_dataset (`Dataset`): the seed pool, with `prompt` and `category` columns (e.g. the SEAS dataset).
        processing_class / red_team_processing_class: the tokenizers (loaded with the models given by name).
        judge (*optional*): a [`~hf_safety.judges.Judge`], a callable `(prompts, responses) -> verdicts` or a judge
            name; default: `args.judge`.
        general_dataset (`Dataset`, *optional*): general preference data (`prompt`, `chosen`, `rejected`), mixed into
            the pairs of `args.general_data_side` at `args.general_data_ratio`.
        eval_prompts (*optional*): a fixed attack set (a suite name or path, or a `Dataset` with `prompt`): after
            each round the new target answers it through [`~hf_safety.SafetyEvaluator`] and `seas/target_asr` is
            logged.
        callbacks: [`SEASCallback`]s and any `TrainerCallback`.
        peft_config / red_team_peft_config: LoRA for each side (`red_team_peft_config` defaults to `peft_config`).
        quantization_config (`BitsAndBytesConfig`, *optional*): for both models given by name (QLoRA with
            `peft_config`).

    Example:
    ```python
    >>> trainer = SEASTrainer(model="meta-llama/Meta-Llama-3-8B", red_team_model="my-org/seas-r0",
    ...                       args=SEASConfig("seas-out"), train_dataset=seed_pool, judge="llama-guard-3")
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "dpo", "hf-safety", "seas"]
    _name = "SEAS"
    _paper = SEAS_PAPER

    def __init__(
        self,
        model: str | PreTrainedModel,
        red_team_model: str | PreTrainedModel,
        args: SEASConfig | None = None,
        train_dataset: Dataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        red_team_processing_class: PreTrainedTokenizerBase | None = None,
        judge: JudgeLike | None = None,
        general_dataset: Dataset | None = None,
        eval_prompts: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        peft_config: Any | None = None,
        red_team_peft_config: Any | None = None,
        quantization_config: Any | None = None,
    ):
        # Both starting models as the user named them (a Hub id, a folder, or toy://...), for the cards
        self._base_model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        self._red_team_base_name = (
            red_team_model if isinstance(red_team_model, str) else get_config_model_id(red_team_model.config)
        )
        self._rounds: list[dict[str, Any]] = []  # the finished rounds' metrics (`results.json`)
        self._round_in_progress: int | None = None
        if args is None:
            args = SEASConfig(f"{self._base_model_name.split('/')[-1]}-SEAS")
        if train_dataset is None:
            raise ValueError("SEASTrainer needs `train_dataset`: the seed pool, with `prompt` and `category` columns")
        self.seed_pool = SeedPool(train_dataset, args.num_seed_examples)
        self.seas_output_dir = Path(args.output_dir)
        model, processing_class = _load(model, processing_class, args, quantization_config)
        red_team_model, red_team_processing_class = _load(
            red_team_model, red_team_processing_class, args, quantization_config
        )
        for tokenizer in (processing_class, red_team_processing_class):
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        self.red_team_tokenizer = red_team_processing_class
        self.judge = as_judge(judge if judge is not None else args.judge, args.judge_mode)
        self.general_dataset = general_dataset
        # Full fine-tuning: a frozen copy is each side's reference; with PEFT the "ref" adapter is (see _refresh)
        ref_model = None if peft_config is not None else copy.deepcopy(model).eval().requires_grad_(False)
        red_team_peft_config = red_team_peft_config if red_team_peft_config is not None else peft_config
        if peft_config is not None:  # "all-linear" on a 4-bit MoE: LoRA on attention and experts, not the router
            peft_config = resolve_all_linear(peft_config, model)
        if red_team_peft_config is not None:
            red_team_peft_config = resolve_all_linear(red_team_peft_config, red_team_model)
            from peft import get_peft_model, prepare_model_for_kbit_training

            if getattr(red_team_model, "is_loaded_in_4bit", False):
                red_team_model = prepare_model_for_kbit_training(
                    red_team_model, use_gradient_checkpointing=bool(args.activation_checkpointing)
                )
            torch.manual_seed(args.seed)
            red_team_model = get_peft_model(red_team_model, red_team_peft_config)
            self.red_team_ref_model = None
        else:
            self.red_team_ref_model = copy.deepcopy(red_team_model).eval().requires_grad_(False)
        self.red_team_model = red_team_model
        # used above by the loader; DPOTrainer gets the loaded models (and would warn that they are ignored)
        self._preparing_seed_pool = True
        with arguments_set(args, model_init_kwargs=None):
            super().__init__(
                model=model,
                ref_model=ref_model,
                args=args,
                train_dataset=train_dataset,
                processing_class=processing_class,
                callbacks=callbacks,
                peft_config=peft_config,
            )
        self._preparing_seed_pool = False
        self.seed_pool_dataset = train_dataset
        self.evaluator = None
        if eval_prompts is not None:
            from ..eval import SafetyEvalConfig, SafetyEvaluator, load_suite

            suite = load_suite(eval_prompts, name="seas_eval") if not isinstance(eval_prompts, str) else eval_prompts
            self.evaluator = SafetyEvaluator(
                SafetyEvalConfig(
                    batch_size=args.generation_batch_size, seed=args.seed, progress=not args.disable_tqdm
                ),
                suites=[suite],
                judge=self.judge,
                attacks=["none"],
                generation_config=args.generation_config("target"),
            )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if self._preparing_seed_pool:  # the seed pool: prompts to attack with, not preference rows
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    # -- the rounds ------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """
        Runs the rounds. With `resume_from_checkpoint=True` (or the output folder's path) a killed run continues
        after its last finished stage; without it, an output folder that already holds a SEAS run is an error.
        """
        args, root = self.args, self.seas_output_dir
        state = self._load_state(bool(resume_from_checkpoint))
        self._restore_models(state)
        history = self._rounds = state["rounds"]
        for iteration in range(len(history), args.num_iterations):
            folder = iteration_dir(root, iteration)
            folder.mkdir(parents=True, exist_ok=True)
            self._round_in_progress = iteration
            done = set(state["stages"].get(str(iteration), []))
            self._seas_event("on_round_begin", iteration=iteration)

            # Files are written by the main process; every process reads them back after a barrier
            if "attack" not in done:
                attack_log, stats = self._attack(iteration)
                if self.accelerator.is_main_process:
                    attack_log.to_parquet(folder / "attack_log.parquet")
                    (folder / "attack_stats.json").write_text(json.dumps(stats.to_dict(), indent=2))
                self._mark(state, iteration, "attack")
            self.accelerator.wait_for_everyone()
            attack_log = _read_parquet(folder / "attack_log.parquet")
            stats = AttackStats(
                **{k: v for k, v in self._read_json(folder / "attack_stats.json").items() if k != "asr"}
            )
            self._seas_event("on_attack_end", iteration=iteration, attack_log=attack_log, stats=stats)

            if "pairs" not in done:
                red_pairs, target_pairs = self._pairs(iteration, attack_log)
                if self.accelerator.is_main_process:
                    red_pairs.to_parquet(folder / "red_team_pairs.parquet")
                    target_pairs.to_parquet(folder / "target_pairs.parquet")
                self._mark(state, iteration, "pairs")
            self.accelerator.wait_for_everyone()
            red_pairs = _read_parquet(folder / "red_team_pairs.parquet")
            target_pairs = _read_parquet(folder / "target_pairs.parquet")
            self._seas_event(
                "on_pairs_built", iteration=iteration, red_team_pairs=red_pairs, target_pairs=target_pairs
            )

            trained = {}
            for side, pairs in (("red_team", red_pairs), ("target", target_pairs)):
                rows = self._training_rows(side, iteration, pairs)
                trained[side] = len(rows)
                if side not in done:
                    self._train_side(side, iteration, rows)
                    self._mark(state, iteration, side)

            metrics = self._round_metrics(iteration, attack_log, stats, red_pairs, target_pairs, trained)
            history.append(metrics)
            self._save_state(state)
            if self.accelerator.is_main_process:
                (root / RESULTS_FILE).write_text(json.dumps({"rounds": history}, indent=2))
            for side in SIDES:  # the cards again, now with the round's metrics (and evaluation)
                self._write_side_card(side, iteration)
            self.log({f"seas/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
            self._seas_event(
                "on_round_end",
                iteration=iteration,
                metrics=metrics,
                red_team_model=self.red_team_model,
                target_model=self.model,
                output_dir=str(folder),
            )
        self._round_in_progress = None
        self.args.output_dir = str(root)
        return history

    def _attack(self, iteration: int) -> tuple[Dataset, AttackStats]:
        """The round's attack stage, by chunks of `attack_chunk_size` seeds, chunk c sampled from seed
        `seed + 1000 * iteration + 2 * c` (the red team; the target from that + 1): the chunks are split between the
        processes and gathered in order, so the log does not depend on the number of processes."""
        args = self.args
        seeds = self.seed_pool.sample(args.seeds_per_iteration, seed=args.seed + iteration, mode=args.seed_sampling)
        size = args.attack_chunk_size
        parts = []
        with self.accelerator.split_between_processes(list(range(0, len(seeds), size))) as starts:
            for start in starts:
                log, stats = run_attack_stage(
                    (self.red_team_model, self.red_team_tokenizer),
                    (self.model, self.processing_class),
                    seeds[start : start + size],
                    self.judge,
                    num_prompts=args.num_adversarial_prompts,
                    num_responses=args.num_responses,
                    red_team_generation_config=args.generation_config("red_team"),
                    target_generation_config=args.generation_config("target"),
                    iteration=iteration,
                    batch_size=args.generation_batch_size,
                    judge_batch_size=args.judge_batch_size,
                    min_prompt_chars=args.min_prompt_chars,
                    max_prompt_chars=args.max_prompt_chars,
                    seed=args.seed + 1000 * iteration + 2 * (start // size),
                )
                parts.append((log.to_list(), stats))
        parts = gather_object(parts)
        # the first chunk's generation settings (the others differ in their seed only)
        stats = AttackStats(settings={**parts[0][1].settings, "attack_chunk_size": size})
        for name in (f.name for f in dataclasses.fields(AttackStats) if f.name != "settings"):
            setattr(stats, name, sum(getattr(part, name) for _, part in parts))
        rows = [row for log, _ in parts for row in log]
        return Dataset.from_list(rows, features=ATTACK_LOG_FEATURES), stats

    def _pairs(self, iteration: int, attack_log: Dataset) -> tuple[Dataset, Dataset]:
        red = build_red_team_pairs(attack_log)
        short = attack_log.filter(lambda row: row["response_chars"] <= self.args.max_response_chars)
        return red, build_target_pairs(short)

    def _training_rows(self, side: str, iteration: int, pairs: Dataset) -> Dataset:
        """This round's pairs of `side` (with `accumulate_pairs`, those of every round so far), general data mixed
        in where configured, as the rows its DPO trains on."""
        args = self.args
        if args.accumulate_pairs and iteration:
            earlier = [
                _read_parquet(iteration_dir(self.seas_output_dir, i) / f"{side}_pairs.parquet")
                for i in range(iteration)
            ]
            pairs = concatenate_datasets([*earlier, pairs])
        general = self.general_dataset if args.general_data_side in (side, "both") else None
        rows = mix_general_data(pairs, general, args.general_data_ratio if general is not None else 0.0, args.seed)
        tokenizer = self.red_team_tokenizer if side == "red_team" else self.processing_class
        return _as_messages(rows.select_columns(["prompt", "chosen", "rejected"]), tokenizer)

    def _train_side(self, side: str, iteration: int, rows: Dataset) -> None:
        """One DPO run of `side` on `rows` from its current weights, the reference set to them (no rows: nothing to
        learn this round, the weights are kept)."""
        folder = iteration_dir(self.seas_output_dir, iteration) / side
        if len(rows) == 0:
            logger.warning("SEAS round %d: no %s pairs, the %s is kept as it is", iteration, side, side)
        elif side == "red_team":
            self._train_red_team(folder, iteration, rows)
        else:
            self._train_target(folder, rows)
        self._save_side(side, iteration, folder)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _train_target(self, folder: Path, rows: Dataset) -> None:
        args = self.args
        _refresh_reference(self.accelerator.unwrap_model(self.model), self._unwrapped_ref())
        self.train_dataset = self._prepare_dataset(rows, self.processing_class, args, "train")
        self.optimizer, self.lr_scheduler = None, None
        args.output_dir = str(folder)
        history = self.state.log_history  # `train()` starts a new state: keep the whole run's logs in one history
        super().train(resume_from_checkpoint=get_last_checkpoint(folder) if folder.is_dir() else None)
        self.state.log_history = history + self.state.log_history
        args.output_dir = str(self.seas_output_dir)
        # the optimizer state is not needed until the next round's DPO: free it for the attack stage and the red team
        self.optimizer, self.lr_scheduler = None, None
        self.accelerator.free_memory()

    def _train_red_team(self, folder: Path, iteration: int, rows: Dataset) -> None:
        model = self.red_team_model
        if self.red_team_ref_model is not None:
            self.red_team_ref_model.load_state_dict(model.state_dict())
        elif "ref" in model.peft_config:
            model.delete_adapter("ref")  # DPOTrainer adds a fresh "ref" copy of the current adapter
        red_args = self._red_team_args(folder)
        trainer = DPOTrainer(
            model=model,
            ref_model=self.red_team_ref_model,
            args=red_args,
            train_dataset=rows,
            processing_class=self.red_team_tokenizer,
            callbacks=[_RedTeamLogBridge(self, iteration)],
        )
        trainer.remove_callback(PrinterCallback)  # its logs reach the trackers through this trainer
        trainer.train(resume_from_checkpoint=get_last_checkpoint(folder) if folder.is_dir() else None)
        self.red_team_model = trainer.accelerator.unwrap_model(trainer.model)
        trainer.optimizer = trainer.lr_scheduler = None
        trainer.accelerator.free_memory()
        del trainer

    def _red_team_args(self, folder: Path) -> DPOConfig:
        """The target's DPO settings with the `red_team_*` overrides, logging only through this trainer."""
        args = self.args
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(DPOConfig) if f.init}
        values.update(
            output_dir=str(folder), report_to="none", push_to_hub=False, hub_token=None, model_init_kwargs=None
        )
        for name in ("learning_rate", "num_train_epochs", "beta"):
            override = getattr(args, f"red_team_{name}")
            if override is not None:
                values[name] = override
        return DPOConfig(**values)

    def _unwrapped_ref(self):
        return self.accelerator.unwrap_model(self.ref_model) if self.ref_model is not None else None

    def _save_side(self, side: str, iteration: int, folder: Path) -> None:
        """The side's weights after its round (adapter only with PEFT), for the next round, resume and the Hub, with
        its model card."""
        if side == "target":
            self.args.output_dir = str(folder)
            self.save_model(str(folder))
            self.args.output_dir = str(self.seas_output_dir)
        elif self.accelerator.is_main_process:
            self.red_team_model.save_pretrained(folder, selected_adapters=["default"] if self._red_is_peft() else None)
            self.red_team_tokenizer.save_pretrained(folder)
        self._write_side_card(side, iteration)
        self.accelerator.wait_for_everyone()
        for checkpoint in folder.glob("checkpoint-*"):  # the round is done: its checkpoints are no longer needed
            if self.accelerator.is_main_process and not self.args.save_only_model:
                shutil.rmtree(checkpoint, ignore_errors=True)

    def _red_is_peft(self) -> bool:
        return hasattr(self.red_team_model, "peft_config")

    # -- model cards ---------------------------------------------------------------------------------------------

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
        eval_report: Any = None,
        license: str | None = None,
    ):
        """
        Writes `README.md` in `output_dir` (main process only): hf_safety's SEAS card of the target (see
        [`~hf_safety.hub.seas_model_card`]) with the method and paper, the starting model as it was given (a Hub id in
        the metadata; a local folder by its name only), every finished round's attack statistics and pair counts, the
        hyper-parameters and the evaluation: `eval_report` (a [`~hf_safety.eval.SafetyReport`]) or, by default, the
        last round's evaluation of `eval_prompts`. Called while a round's target trains (TRL writes the card with each
        checkpoint), it writes that round's card. No token and no local path is written.
        """
        if not self.is_world_process_zero():
            return
        iteration = None
        if Path(self.args.output_dir).resolve() != self.seas_output_dir.resolve():  # inside a round's DPO run
            iteration, model_name = self._round_in_progress, None
        dataset_names = [dataset_name] if isinstance(dataset_name, str) else dataset_name or ()
        card = self._side_card("target", iteration, model_name, dataset_names, tags, eval_report, license)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def _side_card(
        self, side, iteration, model_name=None, dataset_names=(), tags=None, eval_report=None, license=None
    ):
        """The card of `side` after round `iteration` (None: the run's final model)."""
        args = self.args
        model = self.model if side == "target" else self.red_team_model
        overrides: dict[str, Any] = {"judge": describe_judge(self.judge)["name"]}  # the judge used, not the setting
        if side == "red_team":
            for name in ("learning_rate", "num_train_epochs", "beta"):
                if getattr(args, f"red_team_{name}") is not None:
                    overrides[name] = getattr(args, f"red_team_{name}")
        rounds = self._card_rounds()
        last = iteration if iteration is not None else max((r["iteration"] for r in rounds), default=None)
        if eval_report is None and side == "target" and last is not None:
            report_file = iteration_dir(self.seas_output_dir, last) / "eval" / "report.json"
            if report_file.is_file():
                from ..eval.report import SafetyReport

                eval_report = SafetyReport.load(report_file)
        run_name = (self.hub_model_id or "").split("/")[-1] or self.seas_output_dir.resolve().name
        if model_name is None:
            suffix = f"-round-{iteration}" if iteration is not None else ""
            model_name = f"{run_name}-{side.replace('_', '-')}{suffix}"
        return seas_model_card(
            side=side,
            iteration=iteration,
            base_model=self._base_model_name if side == "target" else self._red_team_base_name,
            model_name=model_name,
            hub_model_id=self.hub_model_id if iteration is None and side == "target" else None,
            dataset_names=dataset_names,
            hyperparameters=card_hyperparameters(
                self.accelerator.unwrap_model(model), args, (*DPO_FIELDS, *SEAS_FIELDS), **overrides
            ),
            rounds=rounds,
            eval_report=eval_report,
            adapter=is_adapter(self.accelerator.unwrap_model(model)),
            license=license,
            tags=[*self._tag_names, *([tags] if isinstance(tags, str) else tags or [])],
        )

    def _card_rounds(self) -> list[dict[str, Any]]:
        """The finished rounds' metrics (from this run, or from `results.json`), and the round in progress as far as
        its files tell (attack statistics, pair counts)."""
        rounds = list(self._rounds)
        results = self.seas_output_dir / RESULTS_FILE
        if not rounds and results.is_file():
            rounds = json.loads(results.read_text()).get("rounds", [])
        current = self._round_in_progress
        if current is not None and all(r.get("iteration") != current for r in rounds):
            folder = iteration_dir(self.seas_output_dir, current)
            partial: dict[str, Any] = {"iteration": current}
            if (folder / "attack_stats.json").is_file():
                stats = self._read_json(folder / "attack_stats.json")
                partial.update(
                    red_team_asr=stats.get("asr"),
                    num_adversarial_prompts=stats.get("num_adversarial_prompts"),
                    num_responses=stats.get("num_responses"),
                    num_unknown_verdicts=stats.get("num_unknown"),
                )
            for side in SIDES:
                if (folder / f"{side}_pairs.parquet").is_file():
                    partial[f"num_{side}_pairs"] = len(_read_parquet(folder / f"{side}_pairs.parquet"))
            rounds.append(partial)
        return rounds

    def _write_side_card(self, side: str, iteration: int) -> None:
        folder = iteration_dir(self.seas_output_dir, iteration) / side
        if self.is_world_process_zero() and folder.is_dir():
            self._side_card(side, iteration).save(str(folder / "README.md"))

    def _round_metrics(self, iteration, attack_log, stats, red_pairs, target_pairs, trained) -> dict[str, Any]:
        counts = pair_counts(attack_log) if len(attack_log) else {}
        prompts = list(dict.fromkeys(attack_log["adversarial_prompt"])) if len(attack_log) else []
        metrics: dict[str, Any] = {
            "iteration": iteration,
            "red_team_asr": stats.asr,  # R_i against T_i, over known verdicts
            "num_seeds": stats.num_seeds,
            "num_adversarial_prompts": stats.num_adversarial_prompts,
            "num_dropped_prompts": stats.num_dropped_empty + stats.num_dropped_length,
            "num_responses": stats.num_responses,
            "num_unknown_verdicts": stats.num_unknown,
            "num_red_team_pairs": len(red_pairs),
            "num_target_pairs": len(target_pairs),
            "prompt_distinct_2": distinct_ngrams(prompts, 2),
            "prompt_unique_ratio": len(prompts) / stats.num_adversarial_prompts
            if stats.num_adversarial_prompts
            else None,
            "judge": describe_judge(self.judge)["name"],
            "judge_path": describe_judge(self.judge)["judge_path"],  # which path judged (score-only, decode...)
            **{f"trained_{side}_rows": n for side, n in trained.items()},
        }
        metrics["unsafe_rate_over_known"] = counts.get("unsafe_rate")
        if self.evaluator is not None:
            metrics.update(self._evaluate_target(iteration))
        return metrics

    def _evaluate_target(self, iteration: int) -> dict[str, Any]:
        """The new target on the fixed attack set, on the main process (it writes the evaluation's files); the
        figures are sent to the other processes."""
        metrics: dict[str, Any] = {}
        if self.accelerator.is_main_process:
            report = self.evaluator.evaluate(
                self.model,
                self.processing_class,
                model_name=f"T{iteration + 1}",
                output_dir=iteration_dir(self.seas_output_dir, iteration) / "eval",
            )
            result = report.results[0]
            metrics["target_asr"] = result.asr.rate  # over the suite's harmful rows; unknown verdicts apart:
            metrics["target_asr_unknown_rate"] = result.asr.unknown_rate  # unreadable answers are not safe ones
            if result.over_refusal.n:
                metrics["target_over_refusal"] = result.over_refusal.rate
        return broadcast_object_list([metrics])[0]

    # -- events, state, resume -------------------------------------------------------------------------------------

    def _seas_event(self, event: str, **kwargs: Any) -> None:
        for callback in self.callback_handler.callbacks:
            method = getattr(callback, event, None)
            if method is not None and isinstance(callback, SEASCallback):
                method(self.args, self.state, self.control, **kwargs)

    def _load_state(self, resume: bool) -> dict[str, Any]:
        path = self.seas_output_dir / STATE_FILE
        if not path.is_file():
            return {"stages": {}, "rounds": []}
        if not resume:
            raise ValueError(
                f"{self.seas_output_dir} already holds a SEAS run ({STATE_FILE}); pass resume_from_checkpoint=True "
                "to continue it, or choose another output_dir"
            )
        state = json.loads(path.read_text())
        logger.info("SEAS: resuming %s: %d rounds done, stages %s", self.seas_output_dir, len(state["rounds"]), state)
        return state

    def _mark(self, state: dict[str, Any], iteration: int, stage: str) -> None:
        state["stages"].setdefault(str(iteration), []).append(stage)
        self._save_state(state)

    def _save_state(self, state: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            self.seas_output_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.seas_output_dir / f".{STATE_FILE}.tmp"
            tmp.write_text(json.dumps(state, indent=2))
            os.replace(tmp, self.seas_output_dir / STATE_FILE)

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text())

    def _restore_models(self, state: dict[str, Any]) -> None:
        """After a restart, each side gets the weights of its last finished DPO run."""
        for side in SIDES:
            finished = [int(i) for i, stages in state["stages"].items() if side in stages]
            if not finished:
                continue
            folder = iteration_dir(self.seas_output_dir, max(finished)) / side
            model = self.red_team_model if side == "red_team" else self.accelerator.unwrap_model(self.model)
            _load_weights(model, folder)
            logger.info("SEAS: %s restored from %s", side, folder)
