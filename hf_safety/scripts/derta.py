"""
DeRTa training script: TRL-parser arguments (script, `DeRTaConfig`, `ModelConfig`) from a YAML recipe and the CLI.

```bash
# The embedded default: a tiny Llama and a toy safety dataset, built locally, CPU, no Hub, a few minutes
accelerate launch recipes/derta_llama3.py --config recipes/derta/toy.yaml

# Meta-Llama-3-8B-Instruct, QLoRA on one GPU
accelerate launch --config_file recipes/accelerate/single_gpu.yaml recipes/derta_llama3.py \\
    --config recipes/derta/llama3-8b-qlora.yaml
```
"""

from __future__ import annotations

import argparse

from datasets import DatasetDict, concatenate_datasets, load_dataset
from transformers import AutoModelForCausalLM
from transformers.utils import logging
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from ..derta import DeRTaConfig, DeRTaTrainer
from ..models import resolve_model_name
from ..toy import TOY_DATASET, ToyWorld  # an entry point: importing the toy world registers toy:// names


logger = logging.get_logger(__name__)


def load_data(script_args: ScriptArguments, seed: int) -> DatasetDict:
    """`toy://safety` (the bundled toy world), a local file (csv/json/jsonl/parquet) or a Hub dataset id."""
    if script_args.dataset_name == TOY_DATASET:
        world = ToyWorld(seed=seed)
        sets = world.eval_sets()
        test = concatenate_datasets([sets["harmful_seen"], sets["benign"]])
        return DatasetDict({"train": world.safety_dataset(), "test": test})
    if script_args.dataset_name is None:
        raise ValueError("Set `dataset_name`: a Hub dataset id, a local data file, or toy://safety.")
    name = script_args.dataset_name
    for ext, builder in ((".jsonl", "json"), (".json", "json"), (".csv", "csv"), (".parquet", "parquet")):
        if name.endswith(ext):
            return load_dataset(builder, data_files={script_args.dataset_train_split: name})
    return load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)


def evaluate_toy(trainer: DeRTaTrainer, start: str, training_args: DeRTaConfig) -> None:
    """In the toy world: the prefill attack on the starting model and the trained one (table, results.json, PNG), and
    the world's evaluation prompts as a suite file (`eval_suite.jsonl`) for `hf-safety eval`."""
    from ..toy.demo import DemoConfig, write_report

    cfg = DemoConfig(output_dir=training_args.output_dir, seed=training_args.seed, progress=False)
    world = ToyWorld(seed=training_args.seed)
    world.eval_suite().to_json(f"{training_args.output_dir}/eval_suite.jsonl")
    models = {"start": AutoModelForCausalLM.from_pretrained(resolve_model_name(start)), "trained": trainer.model}
    write_report(cfg, world, trainer.processing_class, models)


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
        model=resolve_model_name(model_args.model_name_or_path),
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json: the log history of the run
    dataset_name = None if script_args.dataset_name == TOY_DATASET else script_args.dataset_name
    trainer.create_model_card(dataset_name=dataset_name)
    trainer.accelerator.print(
        f"Model, card (README.md) and log (trainer_state.json) saved to {training_args.output_dir}"
    )
    if script_args.dataset_name == TOY_DATASET and trainer.is_world_process_zero():
        evaluate_toy(trainer, model_args.model_name_or_path, training_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
    trainer.end()
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
