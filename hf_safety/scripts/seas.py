"""
SEAS training script: TRL-parser arguments (`SEASScriptArguments`, `SEASConfig`, `ModelConfig`) from a YAML recipe.

```bash
# The embedded default: the toy SEAS world (tiny models, a deterministic judge), CPU, no Hub, minutes
accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/seas_llama3.py --config recipes/seas/toy.yaml

# Llama-3-8B red team and target, Llama Guard 3 8B judge, QLoRA on one GPU
accelerate launch --config_file recipes/accelerate/single_gpu.yaml recipes/seas_llama3.py \\
    --config recipes/seas/llama3-8b-qlora.yaml
```
"""

# ruff: noqa: E402  (bitsandbytes' CPU-kernel notice is silenced before transformers/peft import bitsandbytes)

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..cli import silence_bitsandbytes_cpu_kernel_notice


silence_bitsandbytes_cpu_kernel_notice()

from datasets import Dataset
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from ..data.loading import load_rows
from ..hub import push_dataset, seas_dataset_card
from ..hub.push import default_staging_dir
from ..seas import SEASConfig, SEASTrainer
from ..toy.seas import SEASToyWorld  # an entry point: importing the toy world registers toy:// names and judges
from . import end_run


TOY_SEEDS = "toy://seas-seeds"
TOY_ATTACKS = "toy://seas-attacks"
TOY_GENERAL = "toy://seas-general"


@dataclass
class SEASScriptArguments:
    """The data and the red team of a SEAS run (the target is `ModelConfig.model_name_or_path`)."""

    red_team_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The red team R0 (after its SFT initialization): a Hub id or a local folder."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "The seed pool (`prompt`, `category`): a Hub id, a local file, or toy://seas-seeds."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of the seed pool."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of the seed pool."})
    general_dataset_name: str | None = field(
        default=None, metadata={"help": "General preference data (`prompt`, `chosen`, `rejected`) to mix in."}
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A fixed attack set (suite name, file, or toy://seas-attacks): target ASR after each round."
        },
    )


def load_seas_rows(name: str, split: str = "train", config: str | None = None, seed: int = 0) -> Dataset:
    """A dataset by name: the toy SEAS world's sets, or what `hf_safety.data.loading.load_rows` loads (a local data
    file, a data build spec, a local folder or a Hub dataset)."""
    toy = {TOY_SEEDS: "seed_pool", TOY_ATTACKS: "attack_set", TOY_GENERAL: "general_dataset"}
    if name in toy:
        return getattr(SEASToyWorld(seed=seed), toy[name])()
    return load_rows(name, split, config=config)


def main(script_args: SEASScriptArguments, training_args: SEASConfig, model_args: ModelConfig) -> SEASTrainer:
    if script_args.dataset_name is None or script_args.red_team_model_name_or_path is None:
        raise ValueError("Set `dataset_name` (the seed pool) and `red_team_model_name_or_path` (R0).")
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    seed = training_args.seed
    seeds = load_seas_rows(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config, seed)
    general = load_seas_rows(script_args.general_dataset_name, seed=seed) if script_args.general_dataset_name else None
    eval_prompts = script_args.eval_dataset_name
    if eval_prompts == TOY_ATTACKS:
        eval_prompts = load_seas_rows(eval_prompts, seed=seed)
    trainer = SEASTrainer(
        model=model_args.model_name_or_path,
        red_team_model=script_args.red_team_model_name_or_path,
        args=training_args,
        train_dataset=seeds,
        general_dataset=general,
        eval_prompts=eval_prompts,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    rounds = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if trainer.is_world_process_zero():
        print(json.dumps(rounds, indent=2))
        print(f"Outputs in {training_args.output_dir}: results.json (per-round metrics), seas_state.json, and per")
        print("round iteration_<i>/: attack_log.parquet, red_team_pairs.parquet, target_pairs.parquet, red_team/,")
        print("target/ (the models after the round).")
    if training_args.push_to_hub:
        pushed = trainer.push_to_hub(dataset_name=script_args.dataset_name)
        if trainer.is_world_process_zero():
            print(pushed)
            print(push_run_data(trainer, training_args))
    end_run(trainer)
    return trainer


def push_run_data(trainer: SEASTrainer, training_args: SEASConfig):
    """The run's attack logs and preference pairs (harmful text: a private dataset repo, `<hub_model_id>-data`),
    with their card; offline, staged in `<output_dir>-data-hub/`."""
    output_dir = Path(training_args.output_dir)
    repo_id = f"{trainer.hub_model_id}-data"
    card = seas_dataset_card(output_dir, model_name=trainer.hub_model_id)
    return push_dataset(
        output_dir,
        repo_id,
        card=card,
        staging_dir=default_staging_dir(output_dir, "-data-hub"),
        token=training_args.hub_token,
        commit_message="SEAS attack logs and preference pairs",
        revision=training_args.hub_revision,
    )


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrlParser:
    dataclass_types = (SEASScriptArguments, SEASConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser(
            "seas", help="Train with SEAS from a YAML recipe", dataclass_types=dataclass_types
        )
    return TrlParser(dataclass_types, prog=prog)


def run(args: list[str] | None = None) -> SEASTrainer:
    """Parses `args` (the command line when None) and trains."""
    script_args, training_args, model_args = make_parser().parse_args_and_config(args)
    return main(script_args, training_args, model_args)
