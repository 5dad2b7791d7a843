"""Hub publishing (`hf_safety.hub.push`) against a fake Hub served on 127.0.0.1: which files are sent, with what
visibility, gating and commit message; offline staging; failures; merged vs adapter uploads; no token anywhere."""

import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset, DatasetDict
from huggingface_hub import DatasetCard, ModelCard
from peft import LoraConfig, PeftModel, get_peft_model
from testing_utils import FAKE_TOKEN
from transformers import AutoModelForCausalLM

from hf_safety.hub.push import (
    MANIFEST,
    HubPushError,
    StagedUpload,
    push_dataset,
    push_model,
    push_staged,
    resolve_visibility,
    stage_dataset,
    stage_model,
)
from hf_safety.toy import tiny_model


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def no_leak(caplog, capsys):
    """Checks, after the test, that the fake token is in no log record, no output and no staged file."""
    caplog.set_level(logging.DEBUG)
    folders = []
    yield folders
    out, err = capsys.readouterr()
    assert FAKE_TOKEN not in caplog.text + out + err
    for folder in folders:
        for file in Path(folder).rglob("*"):
            assert not file.is_file() or FAKE_TOKEN.encode() not in file.read_bytes(), file


# -- fixtures: a tiny model, a LoRA adapter, a dataset ------------------------------------------------------------


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def base_dir(tmp_path, llama3_tokenizer):
    folder = tmp_path / "base"
    tiny_model(llama3_tokenizer, hidden_size=16, num_attention_heads=2, num_hidden_layers=1).save_pretrained(folder)
    llama3_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def adapter_dir(tmp_path, base_dir, llama3_tokenizer):
    """A LoRA adapter folder as a trainer leaves it, with files that must not be uploaded."""
    folder = tmp_path / "out"
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(folder)
    llama3_tokenizer.save_pretrained(folder)
    (folder / "training_args.bin").write_bytes(b"pickled args with hub_token=" + FAKE_TOKEN.encode())
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out").write_bytes(b"tb")
    (folder / "trainer_state.json").write_text("{}")
    return folder


CARD = ModelCard("---\nlicense: apache-2.0\ntags:\n- hf-safety\n---\n# tiny safety model\n")
DATA_CARD = DatasetCard("---\nlicense: cc-by-4.0\ntags:\n- not-for-all-audiences\n---\n# harmful prompts\n")


@pytest.fixture
def dataset():
    rows = {"prompt": ["how do i x", "how do i y", "hello"], "chosen": ["Sorry", "Sorry", "hi"]}
    return DatasetDict(
        {"train": Dataset.from_dict(rows), "test": Dataset.from_dict({k: v[:1] for k, v in rows.items()})}
    )


# -- visibility ----------------------------------------------------------------------------------------------------


def test_visibility_rules():
    assert resolve_visibility(contains_harmful=True) is True
    assert resolve_visibility(public=True, contains_harmful=True) is False
    assert resolve_visibility(contains_harmful=False) is None
    assert resolve_visibility(False, contains_harmful=False) is False
    with pytest.raises(ValueError, match="public=True"):
        resolve_visibility(False, contains_harmful=True)
    with pytest.raises(ValueError, match="contradict"):
        resolve_visibility(True, public=True)


# -- datasets ------------------------------------------------------------------------------------------------------


def test_harmful_dataset_is_private_by_default(hub, dataset, tmp_path, no_leak):
    staging = tmp_path / "staged"
    no_leak.append(staging)
    result = push_dataset(
        dataset, "org/harmful", card=DATA_CARD, staging_dir=staging, gated="manual", token=FAKE_TOKEN, endpoint=hub.url
    )
    assert hub.kinds() == ["create", "settings", "preupload", "commit"]
    create = hub.last("create")
    assert create[1:3] == ("dataset", "org/harmful") and create[3]["visibility"] == "private"
    assert hub.last("settings")[3] == {"gated": "manual", "visibility": "private"}
    assert {r[4] for r in hub.requests} == {f"Bearer {FAKE_TOKEN}"}  # the token goes to the Hub, and only there

    summary, files = hub.committed()
    assert summary == "Upload dataset with hf_safety"
    assert sorted(files) == [
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
    ]
    assert pq.read_table(io.BytesIO(files["data/train-00000-of-00001.parquet"])).to_pydict() == dataset["train"][:]
    card = DatasetCard(files["README.md"].decode())
    assert card.data.configs == [
        {
            "config_name": "default",
            "data_files": [{"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}],
        }
    ]
    assert "configs" not in DATA_CARD.data.to_dict()  # the caller's card is untouched

    assert result.pushed and result.private is True and result.gated == "manual"
    assert result.commit_oid == "a" * 40 and result.repo_url.endswith("datasets/org/harmful")
    assert FAKE_TOKEN not in repr(result) + str(result)
    manifest = json.loads((staging / MANIFEST).read_text())
    assert manifest["private"] is True and manifest["contains_harmful"] is True
    assert {f["path"] for f in manifest["files"]} == set(files)


def test_upload_without_hf_xet(hub, dataset, tmp_path, monkeypatch):
    """Without `hf_xet`, `upload_folder` falls back to one `create_commit`: the same files reach the Hub."""
    monkeypatch.setattr("huggingface_hub.hf_api.is_xet_available", lambda: False)
    push_dataset(dataset, "org/d", card=DATA_CARD, staging_dir=tmp_path / "s", endpoint=hub.url)
    assert hub.kinds() == ["create", "settings", "preupload", "commit"]
    assert sorted(hub.committed()[1]) == sorted(StagedUpload.from_dir(tmp_path / "s").files)


def test_harmful_dataset_public_needs_the_explicit_flag(hub, dataset, tmp_path):
    with pytest.raises(ValueError, match="public=True"):
        push_dataset(dataset, "org/d", card=DATA_CARD, staging_dir=tmp_path / "s", private=False, endpoint=hub.url)
    assert hub.requests == [] and not (tmp_path / "s").exists()

    push_dataset(dataset, "org/d", card=DATA_CARD, staging_dir=tmp_path / "s", public=True, endpoint=hub.url)
    assert hub.last("create")[3]["visibility"] == "public"
    assert hub.last("settings")[3] == {"visibility": "public"}


def test_offline_stages_everything_and_sends_nothing(hub, dataset, tmp_path, monkeypatch, no_leak):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    staging = tmp_path / "staged"
    no_leak.append(staging)
    result = push_dataset(dataset, "org/d", card=DATA_CARD, staging_dir=staging, token=FAKE_TOKEN, endpoint=hub.url)
    assert hub.requests == []
    assert not result.pushed and result.reason == "offline" and result.staging_dir == staging.resolve()
    assert "push_staged" in str(result)
    assert sorted(snapshot(staging)) == [
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        MANIFEST,
    ]
    manifest = json.loads((staging / MANIFEST).read_text())
    assert manifest["repo_id"] == "org/d" and manifest["repo_type"] == "dataset" and manifest["private"] is True
    assert manifest["commit_message"] == "Upload dataset with hf_safety"
    assert all(f["size"] == (staging / f["path"]).stat().st_size for f in manifest["files"])

    # back online, the staged folder is pushed as it is
    monkeypatch.delenv("HF_HUB_OFFLINE")
    result = push_staged(staging, token=FAKE_TOKEN, endpoint=hub.url)
    assert result.pushed and sorted(hub.committed()[1]) == sorted(f["path"] for f in manifest["files"])


def test_dataset_folder_pushes_only_the_files_the_card_names(hub, tmp_path):
    """A SEAS-like output folder: the card's `configs` name `iteration_<i>/<table>.parquet`; nothing else goes."""
    run = tmp_path / "seas"
    (run / "iteration_1").mkdir(parents=True)
    Dataset.from_dict({"prompt": ["p"], "unsafe": [True]}).to_parquet(run / "iteration_1" / "attack_log.parquet")
    (run / "iteration_1" / "target").mkdir()
    (run / "iteration_1" / "target" / "model.safetensors").write_bytes(b"weights")
    (run / "seas_state.json").write_text("{}")
    card = DatasetCard(
        "---\nconfigs:\n- config_name: attack_log\n  data_files:\n  - split: iteration_1\n"
        "    path: iteration_1/attack_log.parquet\n---\n# SEAS data\n"
    )
    before = snapshot(run)
    push_dataset(run, "org/seas-data", card=card, gated="auto", endpoint=hub.url)
    assert sorted(hub.committed()[1]) == ["README.md", "iteration_1/attack_log.parquet"]
    assert hub.last("settings")[3] == {"gated": "auto", "visibility": "private"}
    assert snapshot(run) == before and (tmp_path / "seas-hub" / MANIFEST).is_file()


def test_dataset_layout_follows_the_card_configs(tmp_path, dataset):
    card = DatasetCard(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: harmful/train-*\n"
        "  - split: test\n    path: harmful/test.parquet\n---\n"
    )
    upload = stage_dataset(dataset, tmp_path / "s", repo_id="org/d", card=card)
    assert sorted(upload.files) == ["README.md", "harmful/test.parquet", "harmful/train-00000-of-00001.parquet"]
    upload = stage_dataset(dataset["train"], tmp_path / "u", repo_id="org/d", card=DATA_CARD, max_shard_size=1)
    shards = [f"data/train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert sorted(upload.files) == ["README.md", *shards]
    assert [pq.read_table(tmp_path / "u" / s).num_rows for s in shards] == [1, 1, 1]
    with pytest.raises(ValueError, match="must match"):
        stage_dataset({"train": dataset["train"]}, tmp_path / "t", repo_id="org/d", card=card)


# -- models --------------------------------------------------------------------------------------------------------


def test_adapter_push_sends_the_adapter_and_nothing_else(hub, adapter_dir, tmp_path, no_leak):
    staging = tmp_path / "staged"
    no_leak.append(staging)
    before = snapshot(adapter_dir)
    result = push_model(
        adapter_dir, "org/lora", card=CARD, staging_dir=staging, token=FAKE_TOKEN, endpoint=hub.url, private=True
    )
    summary, files = hub.committed()
    assert summary == "Upload LoRA adapter with hf_safety"
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= set(files)
    assert not {"training_args.bin", "trainer_state.json", "model.safetensors", MANIFEST} & set(files)
    assert not [f for f in files if f.startswith(("checkpoint-", "runs/"))]
    assert files["adapter_model.safetensors"] == (adapter_dir / "adapter_model.safetensors").read_bytes()
    assert files["README.md"].decode() == str(CARD)
    assert hub.last("create")[3]["visibility"] == "private" and hub.last("settings")[3] == {"visibility": "private"}
    assert result.pushed and set(result.files) == set(files)
    manifest = json.loads((staging / MANIFEST).read_text())
    assert {"training_args.bin", "checkpoint-2", "runs"} <= set(manifest["excluded"])
    assert snapshot(adapter_dir) == before


def test_model_private_none_leaves_visibility_to_the_account(hub, base_dir, tmp_path):
    push_model(base_dir, "me/tiny", card=CARD, staging_dir=tmp_path / "s", endpoint=hub.url)
    assert "visibility" not in hub.last("create")[3] and "settings" not in hub.kinds()
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(hub.committed()[1])


def test_merged_push_sends_full_weights(hub, adapter_dir, base_dir, tmp_path, llama3_tokenizer):
    result = push_model(
        adapter_dir, "org/merged", merged=True, card=CARD, staging_dir=tmp_path / "s", endpoint=hub.url
    )
    summary, files = hub.committed()
    assert summary == "Upload merged model with hf_safety"
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(files)
    assert not [f for f in files if f.startswith("adapter")]
    assert files["tokenizer.json"] == (adapter_dir / "tokenizer.json").read_bytes()

    merged = AutoModelForCausalLM.from_pretrained(result.staging_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
    ids = torch.tensor([llama3_tokenizer("how do i build a weapon").input_ids])
    with torch.no_grad():
        merged_logits, base_logits, peft_logits = (m(ids).logits for m in (merged, base, peft_model))
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)  # the adapter changed the weights
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-4, rtol=1e-4)


def test_merged_and_adapter_together(adapter_dir, tmp_path):
    trainer = SimpleNamespace(args=SimpleNamespace(output_dir=str(adapter_dir)))  # a trainer stands for its output
    upload = stage_model(trainer, tmp_path / "s", repo_id="org/m", merged=True, adapter=True, card=CARD)
    assert {"model.safetensors", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(
        upload.files
    )
    assert "adapter_config.json" not in upload.files


def test_merge_refuses_a_4bit_base(adapter_dir, base_dir, tmp_path):
    config = json.loads((base_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="4-bit.*bf16"):
        stage_model(adapter_dir, tmp_path / "s", repo_id="org/m", merged=True, card=CARD)


def test_a_staged_token_is_refused(adapter_dir, tmp_path):
    with pytest.raises(ValueError, match="training_args.bin contains a Hugging Face token") as info:
        stage_model(
            adapter_dir, tmp_path / "s", repo_id="o/m", card=CARD, extra_files=["training_args.bin"], token=FAKE_TOKEN
        )
    assert FAKE_TOKEN not in str(info.value)
    assert not (tmp_path / "s" / "training_args.bin").exists() and (adapter_dir / "training_args.bin").exists()
    with pytest.raises(ValueError, match="did not complete"):
        push_staged(tmp_path / "s", dry_run=True)
    stage_model(adapter_dir, tmp_path / "s", repo_id="o/m", card=CARD, token=FAKE_TOKEN)  # staged again in place


def test_staging_dir_safety(adapter_dir, tmp_path):
    with pytest.raises(ValueError, match="must not be the source folder"):
        stage_model(adapter_dir, adapter_dir, repo_id="o/m", card=CARD)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        stage_model(adapter_dir, tmp_path / "busy", repo_id="o/m", card=CARD)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    stage_model(adapter_dir, tmp_path / "s", repo_id="o/m", card=CARD)
    stage_model(adapter_dir, tmp_path / "s", repo_id="o/m2", card=CARD)  # a previous staging folder is replaced
    assert StagedUpload.from_dir(tmp_path / "s").repo_id == "o/m2"


# -- failures ------------------------------------------------------------------------------------------------------


def test_failed_upload_keeps_local_files(hub, adapter_dir, tmp_path, monkeypatch, no_leak):
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # retries without waiting
    hub.fail["commit"] = 500
    staging = tmp_path / "staged"
    no_leak.append(staging)
    before = snapshot(adapter_dir)
    with pytest.raises(HubPushError) as info:
        push_model(adapter_dir, "org/lora", card=CARD, staging_dir=staging, token=FAKE_TOKEN, endpoint=hub.url)
    error = info.value
    assert error.step == "upload" and error.repo_id == "org/lora" and error.staging_dir == staging.resolve()
    message = str(error)
    assert "'upload'" in message and "org/lora" in message and str(staging.resolve()) in message
    assert "500" in message and FAKE_TOKEN not in message
    assert snapshot(adapter_dir) == before
    assert (staging / "adapter_model.safetensors").is_file() and (staging / MANIFEST).is_file()

    hub.fail.clear()  # the staged folder can be pushed again as it is
    assert push_staged(staging, token=FAKE_TOKEN, endpoint=hub.url).pushed


def test_failed_create_repo_names_the_step(hub, dataset, tmp_path, no_leak):
    hub.fail["create"] = 403
    with pytest.raises(HubPushError, match="'create repo'.*org/d") as info:
        push_dataset(dataset, "org/d", card=DATA_CARD, staging_dir=tmp_path / "s", token=FAKE_TOKEN, endpoint=hub.url)
    assert info.value.step == "create repo" and hub.kinds()[0] == "create"
    assert not {"settings", "preupload", "commit"} & set(hub.kinds())
    assert (tmp_path / "s" / "README.md").is_file()
