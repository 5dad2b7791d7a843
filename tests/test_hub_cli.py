"""`hf-safety push` against a fake Hub on 127.0.0.1: a data build's rows with their card (private unless --public),
a model folder staged with --dry-run and sent later with `push staged`."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard
from testing_utils import EXPECTED_INDEX, hand_report, index_values

from hf_safety.cli import main as cli_main
from hf_safety.hub import derta_model_card
from hf_safety.toy import tiny_model


FIXTURES = Path(__file__).parent / "fixtures" / "sources"


@pytest.fixture
def built_mix(tmp_path):
    spec = {
        "harmful": {"builder": "pku-saferlhf", "source": str(FIXTURES / "pku_saferlhf.jsonl"), "both_safe": "drop"},
        "helpful": {"builder": "messages", "source": str(FIXTURES / "messages.jsonl")},
        "seed": 1,
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "derta-mix"
    assert cli_main(["data", "build", "--config", str(tmp_path / "mix.yaml"), "--output", str(out)]) == 0
    return out


def test_data_build_folder_has_its_card(built_mix, tmp_path):
    card = DatasetCard.load(built_mix / "README.md")
    assert "derta" in card.data.tags and card.data.source_datasets is None  # local fixture files: no Hub ids
    assert "**7 rows**: **3 harmful**" in card.content and "Content warning" in card.content
    assert str(tmp_path) not in card.content and str(FIXTURES) not in card.content


def test_push_built_dataset_private_by_default(hub, built_mix):
    assert cli_main(["push", "dataset", str(built_mix), "--repo-id", "me/derta-mix"]) == 0
    create = hub.last("create")
    assert create[1] == "dataset" and create[2] == "me/derta-mix" and create[3]["visibility"] == "private"
    summary, files = hub.committed()
    assert summary == "Upload dataset with hf_safety"
    assert set(files) == {"README.md", "data/train-00000-of-00001.parquet"}
    table = pq.read_table(__import__("io").BytesIO(files["data/train-00000-of-00001.parquet"]))
    assert table.num_rows == 7 and sum(table.column("is_harmful").to_pylist()) == 3
    card = DatasetCard(files["README.md"].decode())
    assert card.data.configs[0]["data_files"][0]["path"].startswith("data/train")


def test_push_built_dataset_public_and_gated(hub, built_mix):
    argv = ["push", "dataset", str(built_mix), "--repo-id", "me/derta-mix", "--public", "--gated", "manual"]
    assert cli_main(argv + ["--commit-message", "v1"]) == 0
    assert hub.last("create")[3]["visibility"] == "public"
    assert hub.last("settings")[3] == {"visibility": "public", "gated": "manual"}
    assert hub.committed()[0] == "v1"


def test_push_unknown_dataset_folder_says_what_it_takes(tmp_path):
    with pytest.raises(SystemExit, match="not a SEAS output folder"):
        cli_main(["push", "dataset", str(tmp_path), "--repo-id", "me/x"])


def test_push_model_dry_run_then_staged(hub, tmp_path, llama3_tokenizer):
    folder = tmp_path / "model"
    tiny_model(llama3_tokenizer).save_pretrained(folder)
    llama3_tokenizer.save_pretrained(folder)
    (folder / "trainer_state.json").write_text("{}")  # not a file to publish
    assert cli_main(["push", "model", str(folder), "--repo-id", "me/tiny", "--private", "--dry-run"]) == 0
    assert hub.requests == []  # nothing sent
    staged = tmp_path / "model-hub"
    manifest = json.loads((staged / "hub_upload.json").read_text())
    assert manifest["private"] is True and "trainer_state.json" not in {f["path"] for f in manifest["files"]}
    assert cli_main(["push", "staged", str(staged)]) == 0
    assert hub.last("create")[3]["visibility"] == "private"
    _, files = hub.committed()
    assert set(files) == {f["path"] for f in manifest["files"]}


def test_push_model_with_eval_report_and_license(hub, tmp_path, llama3_tokenizer):
    """`--eval-report` puts the evaluation table and model-index into the card the trainer wrote."""
    folder = tmp_path / "model"
    tiny_model(llama3_tokenizer).save_pretrained(folder)
    derta_model_card(base_model="org/base", model_name="model", hyperparameters={}).save(folder / "README.md")
    report = hand_report()
    report.save(tmp_path / "eval")
    argv = ["push", "model", str(folder), "--repo-id", "me/model", "--license", "apache-2.0"]
    assert cli_main(argv + ["--eval-report", str(tmp_path / "eval" / "report.json")]) == 0
    card = ModelCard(hub.committed()[1]["README.md"].decode())
    assert index_values(card.data) == EXPECTED_INDEX and card.data.license == "apache-2.0"
    assert card.data.base_model == "org/base" and "| mini | none | 6 | 75.0% (" in card.content
    assert (folder / "README.md").read_text().count("75.0%") == 0  # the local card is left as it was


def test_push_built_file_dry_run(hub, tmp_path):
    """A one-source build written as a .jsonl file (its report beside it) stages its rows and card; nothing sent."""
    out = tmp_path / "pku.jsonl"
    source = str(FIXTURES / "pku_saferlhf.jsonl")
    assert cli_main(["data", "build", "--builder", "pku-saferlhf", "--source", source, "--output", str(out)]) == 0
    assert cli_main(["push", "dataset", str(out), "--repo-id", "me/pku", "--dry-run"]) == 0
    assert hub.requests == []
    staged = tmp_path / "pku-hub"
    manifest = json.loads((staged / "hub_upload.json").read_text())
    assert manifest["private"] is True and manifest["contains_harmful"] is True
    table = pq.read_table(staged / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == 4 and sum(table.column("is_harmful").to_pylist()) == 3  # 3 pairs, 1 both-safe row
    card = DatasetCard.load(staged / "README.md")
    assert "**4 rows**: **3 harmful**" in card.content and card.data.pretty_name == "pku-saferlhf rows"
