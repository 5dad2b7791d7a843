"""
DeRTa training script: TRL-parser arguments (script, `DeRTaConfig`, `ModelConfig`) from a YAML recipe and the CLI.

```bash
# The embedded default: a tiny Llama and a toy safety dataset, built locally, CPU, no Hub, a few minutes
accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/derta_llama3.py --config recipes/derta/toy.yaml

# Meta-Llama-3-8B-Instruct, QLoRA on one GPU
accelerate launch --config_file recipes/accelerate/single_gpu.yaml recipes/derta_llama3.py \\
    --config recipes/derta/llama3-8b-qlora.yaml
```
"""

# ruff: noqa: E402  (bitsandbytes' CPU-kernel notice is silenced before transformers/peft import bitsandbytes)

from __future__ import annotations

import argparse
import os

from ..cli import silence_bitsandbytes_cpu_kernel_notice


silence_bitsandbytes_cpu_kernel_notice()

from datasets import DatasetDict, concatenate_datasets
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from ..data.loading import DATA_FILE_BUILDERS, is_build_spec, load_rows
from ..derta import DeRTaConfig, DeRTaTrainer
from ..models import resolve_model_name
from ..toy import TOY_DATASET, ToyWorld  # an entry point: importing the toy world registers toy:// names
from . import end_run


logger = hf_logging.get_logger(__name__)

TOY_TABLE_LEGEND = """\
How to read the table: each cell is the refusal rate (the model says "Sorry" within 4 tokens) when the first k tokens
of a harmful answer are forced into its reply (k=0: the plain request). start = the model before training, trained =
after this run; seen = harmful topics of the safety training data (new phrasings), held_out = harmful topics never seen
in safety training; benign EM = benign requests answered exactly as the toy world's answer (over-refusal shows here)."""


def load_data(script_args: ScriptArguments, seed: int) -> DatasetDict:
    """`toy://safety` (the bundled toy world), a local file (csv/json/jsonl/parquet), a data build spec (`.yaml`, see
    `hf_safety.data.build`), a local folder or a Hub dataset id."""
    if script_args.dataset_name == TOY_DATASET:
        world = ToyWorld(seed=seed)
        sets = world.eval_sets()
        test = concatenate_datasets([sets["harmful_seen"], sets["benign"]])
        return DatasetDict({"train": world.safety_dataset(), "test": test})
    if script_args.dataset_name is None:
        raise ValueError(
            "Set `dataset_name`: a Hub dataset id, a local data file, a data build spec, or toy://safety."
        )
    name = script_args.dataset_name
    if is_build_spec(name) or name.endswith(tuple(DATA_FILE_BUILDERS)):
        return DatasetDict({script_args.dataset_train_split: load_rows(name, split=script_args.dataset_train_split)})
    return load_rows(name, split=None, config=script_args.dataset_config, streaming=script_args.dataset_streaming)


def recipe_settings(
    script_args: ScriptArguments, training_args: DeRTaConfig, model_args: ModelConfig, trainer: DeRTaTrainer
) -> dict:
    """The settings of the run that decide its results, as recorded in `results.json`."""
    fields = (
        "refusal_text",
        "harmful_prefix",
        "rto",
        "rto_weight",
        "prefix_length_sampling",
        "empty_prefix_prob",
        "rto_position_keep",
        "learning_rate",
        "lr_scheduler_type",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "seed",
    )
    return {
        "model": model_args.model_name_or_path,
        "dataset": script_args.dataset_name,
        **{name: getattr(training_args, name) for name in fields},
        "steps_trained": trainer.state.global_step,
    }


def evaluate_toy(trainer: DeRTaTrainer, start: str, training_args: DeRTaConfig, settings: dict) -> None:
    """In the toy world: the prefill attack on the starting model and the trained one (table, results.json with the
    run's `settings`, PNG), and the world's evaluation prompts as a suite file (`eval_suite.jsonl`) for
    `hf-safety eval`."""
    from ..toy.demo import DemoConfig, write_report

    # The forced-prefix attack only (deep_depths=[]): the demo (`hf-safety demo`) also runs the deep-harm attack
    cfg = DemoConfig(output_dir=training_args.output_dir, seed=training_args.seed, deep_depths=[], progress=False)
    world = ToyWorld(seed=training_args.seed)
    world.eval_suite().to_json(os.path.join(training_args.output_dir, "eval_suite.jsonl"))
    models = {"start": AutoModelForCausalLM.from_pretrained(resolve_model_name(start)), "trained": trainer.model}
    settings = {**settings, "evaluation": {"prefix_lengths": cfg.prefix_lengths, "refusal_window": cfg.window}}
    write_report(cfg, world, trainer.processing_class, models, config=settings)
    print(TOY_TABLE_LEGEND)


def outputs_summary(output_dir: str, toy: bool) -> str:
    """Where each output of the run went, one line each."""
    entries = [
        ("model", output_dir, "weights, config and tokenizer"),
        ("model card", os.path.join(output_dir, "README.md"), ""),
        ("training log", os.path.join(output_dir, "trainer_state.json"), "losses per logging step"),
    ]
    if toy:
        entries += [
            ("results", os.path.join(output_dir, "results.json"), "the table above and the run's settings"),
            ("plot", os.path.join(output_dir, "refusal_vs_prefix.png"), "refusal vs forced prefix length"),
            ("eval suite", os.path.join(output_dir, "eval_suite.jsonl"), "held-back prompts for `hf-safety eval`"),
        ]
    lines = ["Outputs:"] + [f"  {what:<13} {path}" + (f"  ({note})" if note else "") for what, path, note in entries]
    return "\n".join(lines)


def main(script_args: ScriptArguments, training_args: DeRTaConfig, model_args: ModelConfig) -> DeRTaTrainer:
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}

    dataset = load_data(script_args, training_args.seed)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = dataset[script_args.dataset_test_split]

    trainer = DeRTaTrainer(
        model=model_args.model_name_or_path,  # as given (a Hub id, a folder or toy://...): the card names it
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json: the log history of the run
    model_name = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
    trainer.create_model_card(model_name=model_name, dataset_name=script_args.dataset_name)
    toy = script_args.dataset_name == TOY_DATASET
    if trainer.is_world_process_zero():
        if toy:
            settings = recipe_settings(script_args, training_args, model_args, trainer)
            evaluate_toy(trainer, model_args.model_name_or_path, training_args, settings)
        print(outputs_summary(training_args.output_dir, toy))
    if training_args.push_to_hub:  # offline: stages what would be pushed in <output_dir>-hub/
        pushed = trainer.push_to_hub(dataset_name=script_args.dataset_name)
        if trainer.is_world_process_zero():
            print(pushed)
    end_run(trainer)
    return trainer


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrlParser:
    dataclass_types = (ScriptArguments, DeRTaConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser(
            "derta", help="Train with DeRTa from a YAML recipe", dataclass_types=dataclass_types
        )
    return TrlParser(dataclass_types, prog=prog)


def run(args: list[str] | None = None) -> DeRTaTrainer:
    """Parses `args` (the command line when None) and trains."""
    script_args, training_args, model_args = make_parser().parse_args_and_config(args)
    return main(script_args, training_args, model_args)
