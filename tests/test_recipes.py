"""The toy recipe end to end (shortened), the 8B recipe's parsing, the CLI, and the QLoRA code path on CPU."""

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from peft import LoraConfig
from testing_utils import FAKE_TOKEN, toy_rows
from transformers import AutoModelForCausalLM

from hf_safety import DeRTaConfig, DeRTaTrainer
from hf_safety.cli import main as cli_main
from hf_safety.eval import SafetyReport
from hf_safety.models import bnb_4bit_config
from hf_safety.scripts.derta import make_parser
from hf_safety.toy import TOY_MODEL, resolve_model


RECIPES = Path(__file__).parent.parent / "recipes"


def test_toy_recipe_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_SAFETY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "derta-toy"
    status = cli_main(
        [
            "derta",
            "--config",
            str(RECIPES / "derta" / "toy.yaml"),
            "--output_dir",
            str(out),
            "--max_steps",
            "30",
            "--logging_steps",
            "10",
            "--disable_tqdm",
            "true",
            "--push_to_hub",
            "true",
            "--hub_token",
            FAKE_TOKEN,
        ]
    )
    assert status == 0
    # A model that loads, a card naming DeRTa and the paper, and a log with both losses going down
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    card = (out / "README.md").read_text()
    assert "DeRTa" in card and "2407.09121" in card and "hf-safety" in card
    # The card names the base model and the dataset as the recipe gave them (in the prose: the metadata lists Hub ids
    # only), and the model by its folder
    assert "This model is `toy://unsafe-llama` fine-tuned with **DeRTa**" in card and "on `toy://safety`" in card
    assert "toy://" not in card.split("---")[1] and "Model Card for derta-toy" in card
    for none in ("Model Card for None", "[None]", 'model="None"', "base_model: None"):
        assert none not in card, none
    logs = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert logs[-1]["step"] == 30
    assert logs[-1]["derta/rto_loss"] < logs[0]["derta/rto_loss"]
    assert logs[-1]["derta/mle_loss"] < logs[0]["derta/mle_loss"]
    # The toy world's prefill attack on the unsafe start and on the trained model
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["model"] == "toy://unsafe-llama" and saved["config"]["dataset"] == "toy://safety"
    assert saved["config"]["max_steps"] == 30 and saved["config"]["rto_weight"] == 1.0
    results = saved["results"]
    assert results["start"]["refusal_seen"]["0"] == 0.0  # the unsafe start answers harmful requests
    assert results["trained"]["refusal_seen"]["0"] >= 0.9
    assert (out / "refusal_vs_prefix.png").exists()
    # push_to_hub offline: exactly what would be pushed, card included, staged beside the output; no token anywhere
    staged = tmp_path / "derta-toy-hub"
    manifest = json.loads((staged / "hub_upload.json").read_text())
    assert manifest["repo_id"] == "derta-toy" and manifest["repo_type"] == "model"
    sent = {f["path"] for f in manifest["files"]}
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= sent
    assert not any(p.startswith(("checkpoint-", "results", "training_args", "eval_suite")) for p in sent)
    assert sent == {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()} - {"hub_upload.json"}
    assert (staged / "README.md").read_text() == card
    for file in tmp_path.rglob("*"):
        assert not file.is_file() or FAKE_TOKEN.encode() not in file.read_bytes(), file

    # The README's evaluation examples, as written, on this model (offline: bundled suites, the suite file written by
    # the recipe)
    readme = (RECIPES.parent / "README.md").read_text()
    section = readme[readme.index("### Evaluating a model") :]
    command = re.search(r"```bash\n(hf-safety eval .*?)```", section, re.S).group(1).replace("\\\n", " ")
    command = command.replace("outputs/derta-toy", str(out)).replace("eval_out", str(tmp_path / "eval_out"))
    assert cli_main(shlex.split(command)[1:] + ["--no-progress"]) == 0
    report = SafetyReport.load(tmp_path / "eval_out")
    assert report.result("eval_suite", "prefill:12").n == 50 and report.result("advbench", "prefill:12").n == 50
    assert report.result("xstest", "prefill:3").n == 0  # no targets: n/a
    assert report.result("xstest", "none").over_refusal.n == 50
    code = re.search(r"```python\n(from hf_safety import evaluate_safety.*?)```", section, re.S).group(1)
    code = code.replace('"outputs/derta-toy"', repr(str(out))).replace('"eval_out_py"', repr(str(tmp_path / "py")))
    exec(code.replace("limit=50,", "limit=50, progress=False,"), {})
    report = SafetyReport.load(tmp_path / "py")
    assert {r.attack for r in report.results} >= {"none", "prefill:12", "template:aim", "code", "cipher:caesar"}


def test_8b_recipe_parses_to_qlora_settings():
    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config(
        ["--config", str(RECIPES / "derta" / "llama3-8b-qlora.yaml"), "--bf16", "false", "--use_cpu", "true"]
    )  # bf16 (set by the recipe for the GPU) cannot be validated on this CPU-only machine
    assert model_args.model_name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4" and model_args.use_peft
    assert set(model_args.lora_target_modules) >= {"q_proj", "v_proj", "down_proj"}
    assert isinstance(training_args, DeRTaConfig)
    assert training_args.prefix_length_sampling == "word_boundary" and training_args.rto
    assert resolve_model(model_args.model_name_or_path) == model_args.model_name_or_path  # loaded by name


def test_recipe_yamls_only_use_known_keys():
    parser = make_parser()
    for path in (RECIPES / "derta").glob("*.yaml"):
        keys = set(yaml.safe_load(path.read_text()))
        known = {f.name for dc in parser.dataclass_types for f in dc.__dataclass_fields__.values()}
        assert keys <= known, (path.name, keys - known)


def test_cli_help_and_unknown_command(capsys):
    assert cli_main(["--help"]) == 0
    assert "derta" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2


def test_qlora_nf4_path_trains_on_cpu(tmp_path, monkeypatch, cpu_args):
    """The 8B recipe's code path (4-bit NF4 base loaded by path + LoRA) on the tiny toy Llama; bitsandbytes runs on CPU."""
    pytest.importorskip("bitsandbytes")
    monkeypatch.setenv("HF_SAFETY_CACHE", str(tmp_path / "cache"))
    path = resolve_model(TOY_MODEL)
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in toy_rows()[::6]]
    quantization = bnb_4bit_config(torch.float32)
    trainer = DeRTaTrainer(
        model=path,
        args=DeRTaConfig(
            output_dir=str(tmp_path / "out"),
            max_steps=2,
            learning_rate=1e-2,
            model_init_kwargs={"device_map": "cpu"},
            activation_checkpointing=True,
            **cpu_args,
        ),
        train_dataset=Dataset.from_list(rows),
        quantization_config=quantization,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    base = trainer.model.get_base_model()
    assert type(base.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(p, dict(trainer.model.named_parameters())[n]) for n, p in lora.items())
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)
