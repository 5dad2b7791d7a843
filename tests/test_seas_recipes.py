"""SEAS recipes: the toy recipe end to end (shortened), the 8B QLoRA recipe's parsing, and the 4-bit + LoRA path by
name on CPU."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import DatasetCard, ModelCard
from peft import LoraConfig
from testing_utils import toy_corpus
from transformers import BitsAndBytesConfig

from hf_safety.cli import main as cli_main
from hf_safety.judges import Verdict
from hf_safety.models import bnb_4bit_config
from hf_safety.scripts.seas import make_parser, run
from hf_safety.seas import SEASConfig, SEASTrainer, iteration_dir
from hf_safety.toy import build_tokenizer, tiny_model


RECIPES = Path(__file__).parent.parent / "recipes"


def test_toy_recipe_end_to_end(tmp_path):
    out = tmp_path / "seas-toy"
    trainer = run(
        ["--config", str(RECIPES / "seas" / "toy.yaml"), "--output_dir", str(out), "--num_iterations", "2"]
        + ["--seeds_per_iteration", "8", "--num_adversarial_prompts", "2", "--logging_steps", "1"]
        + ["--disable_tqdm", "true", "--push_to_hub", "true", "--hub_model_id", "me/seas-toy"]
    )
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    assert [r["iteration"] for r in rounds] == [0, 1]
    for i, metrics in enumerate(rounds):
        folder = iteration_dir(out, i)
        for name in ("attack_log", "red_team_pairs", "target_pairs"):
            assert (folder / f"{name}.parquet").is_file()
        assert (folder / "red_team" / "model.safetensors").is_file()
        assert (folder / "target" / "model.safetensors").is_file()
        log = Dataset.from_parquet(str(folder / "attack_log.parquet"))
        assert len(log) == metrics["num_responses"] == 4 * metrics["num_adversarial_prompts"]  # m = 4
        assert metrics["judge"] == "toy-seas" and 0.0 <= metrics["target_asr"] <= 1.0
        # general preference rows are mixed into the target's pairs (ratio 0.5)
        assert metrics["trained_target_rows"] == metrics["num_target_pairs"] + round(0.5 * metrics["num_target_pairs"])
    logged = [log for log in trainer.state.log_history if "seas/red_team_asr" in log]
    assert [log["seas/iteration"] for log in logged] == [0, 1]
    assert any("red_team/loss" in log for log in trainer.state.log_history)  # the red team's DPO, forwarded

    # push_to_hub offline: what would be pushed is staged. The model repo: the final target with our card, none of
    # the run's data; the data repo: private, every round's tables at the paths the card's configs name
    model = json.loads((tmp_path / "seas-toy-hub" / "hub_upload.json").read_text())
    sent = {f["path"] for f in model["files"]}
    assert model["repo_id"] == "me/seas-toy" and {"README.md", "model.safetensors", "config.json"} <= sent
    assert not any(p.endswith(".parquet") or p.startswith("iteration_") for p in sent)
    card = ModelCard.load(tmp_path / "seas-toy-hub" / "README.md")
    assert "seas" in card.data.tags and "2408.02632" in card.content
    data = json.loads((tmp_path / "seas-toy-data-hub" / "hub_upload.json").read_text())
    assert data["repo_id"] == "me/seas-toy-data" and data["repo_type"] == "dataset" and data["private"] is True
    tables = {
        f"iteration_{i}/{name}.parquet" for i in (0, 1) for name in ("attack_log", "red_team_pairs", "target_pairs")
    }
    assert {f["path"] for f in data["files"]} == tables | {"README.md"}
    data_card = DatasetCard.load(tmp_path / "seas-toy-data-hub" / "README.md")
    assert {c["config_name"] for c in data_card.data.configs} == {"attack_log", "red_team_pairs", "target_pairs"}


def test_seas_without_arguments_prints_usage(capsys):
    assert cli_main(["seas"]) == 2
    assert "hf-safety seas --config recipes/seas/toy.yaml" in capsys.readouterr().err


def test_8b_recipe_parses_to_qlora_settings():
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", str(RECIPES / "seas" / "llama3-8b-qlora.yaml"), "--bf16", "false", "--use_cpu", "true"]
    )
    assert isinstance(training_args, SEASConfig)
    assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4" and model_args.use_peft
    assert script_args.red_team_model_name_or_path and script_args.dataset_name == "recipes/data/seas-seeds.yaml"
    assert training_args.judge == "llama-guard-3" and training_args.num_iterations == 3
    assert training_args.red_team_temperature == 0.8 and training_args.target_top_p == 0.9
    assert training_args.beta == 0.1


def test_recipe_yamls_only_use_known_keys():
    parser = make_parser()
    known = {f.name for dc in parser.dataclass_types for f in dc.__dataclass_fields__.values()}
    for path in (RECIPES / "seas").glob("*.yaml"):
        keys = set(yaml.safe_load(path.read_text()))
        assert keys <= known, (path.name, keys - known)


def test_qlora_by_name_trains_both_sides_on_cpu(tmp_path):
    # the code path of the 8B recipe: both models loaded by name through the package's loader, in 4-bit NF4, LoRA
    tok = build_tokenizer(toy_corpus() + ["how to pick a lock"], chat_format="llama3", model="word")
    for name, seed in (("target", 0), ("red", 1)):
        tiny_model(tok, seed=seed, hidden_size=64).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    pool = Dataset.from_list([{"prompt": f"how to pick a lock {i}", "category": c} for c in "ab" for i in range(3)])
    trainer = SEASTrainer(
        model=str(tmp_path / "target"),
        red_team_model=str(tmp_path / "red"),
        args=SEASConfig(
            str(tmp_path / "out"),
            use_cpu=True,
            bf16=False,
            report_to="none",
            num_iterations=1,
            seeds_per_iteration=4,
            num_seed_examples=2,
            num_adversarial_prompts=3,
            num_responses=3,
            red_team_max_new_tokens=6,
            target_max_new_tokens=6,
            per_device_train_batch_size=2,
            save_strategy="no",
            learning_rate=1e-2,
            activation_checkpointing=False,
            model_init_kwargs={"dtype": torch.float32},
        ),
        train_dataset=pool,
        judge=lambda prompts, responses: [Verdict(unsafe=len(r.split()) % 2 == 0) for r in responses],
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        quantization_config=bnb_4bit_config(torch.float32),
    )
    assert trainer.args.model_init_kwargs == {"dtype": torch.float32}  # used by the loader, left to the user
    for model in (trainer.model, trainer.red_team_model):
        kinds = {type(m).__name__ for m in model.modules()}
        assert "Linear4bit" in kinds  # the base really is in 4-bit, LoRA on top
    before = {k: v.clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}
    (metrics,) = trainer.train()
    after = dict(trainer.model.named_parameters())
    if metrics["num_target_pairs"]:
        assert any(not torch.equal(before[k], after[k]) for k in before)
    folder = iteration_dir(tmp_path / "out", 0)
    assert (folder / "target" / "adapter_model.safetensors").is_file()
    assert (folder / "red_team" / "adapter_model.safetensors").is_file()
    with pytest.raises(ValueError, match="applies to models given by name"):
        SEASTrainer(
            model=trainer.model,
            red_team_model=trainer.red_team_model,
            args=trainer.args,
            train_dataset=pool,
            processing_class=tok,
            red_team_processing_class=tok,
            judge="refusal-strings",
            quantization_config=BitsAndBytesConfig(load_in_4bit=True),
        )
