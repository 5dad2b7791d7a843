"""The README's first run explains itself: where every output went, what the table means, no launcher or deprecation
noise, a toy model built atomically with one line saying so; `hf-safety derta` alone prints usage."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_safety.cli import main as cli_main
from hf_safety.toy import BUILD_MARKER, TOY_MODEL, build_atomically, is_complete, resolve_model


ROOT = Path(__file__).parent.parent
RECIPES = ROOT / "recipes"
OUTPUTS = ("README.md", "trainer_state.json", "results.json", "refusal_vs_prefix.png", "eval_suite.jsonl")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """The README command, shortened (the randomly initialised toy model, 2 steps), in a fresh toy-model cache."""
    tmp = tmp_path_factory.mktemp("first_run")
    out, cache = tmp / "derta-toy", tmp / "cache"
    command = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    command += ["--config_file", str(RECIPES / "accelerate" / "cpu.yaml"), str(RECIPES / "derta_llama3.py")]
    command += ["--config", str(RECIPES / "derta" / "toy.yaml"), "--model_name_or_path", TOY_MODEL]
    command += ["--output_dir", str(out), "--max_steps", "2", "--logging_steps", "1"]
    env = {**os.environ, "HF_SAFETY_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out, cache


def test_run_says_where_each_output_went_and_what_the_table_means(short_run):
    proc, out, _ = short_run
    summary = proc.stdout[proc.stdout.index("Outputs:") :]
    assert f"{out}  (" in summary  # the model folder
    for name in OUTPUTS:
        assert summary.count(str(out / name)) == 1, name
        assert (out / name).is_file(), name
    assert (out / "model.safetensors").is_file()
    # The table, then what its numbers mean, once (the main process only)
    assert proc.stdout.count("How to read the table") == 1
    table = proc.stdout[proc.stdout.index("model           topics") : proc.stdout.index("Outputs:")]
    for words in ("forced", "held_out", "never seen", "benign EM", "k=0"):
        assert words in table, words
    # results.json records the recipe's settings, not the demo's
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["model"] == TOY_MODEL and config["dataset"] == "toy://safety"
    assert config["rto"] and config["harmful_prefix"] and config["refusal_text"] == "Sorry"
    assert config["max_steps"] == config["steps_trained"] == 2 and config["seed"] == 42
    assert "arms" not in config and "pretrain_epochs" not in config


def test_run_prints_no_launcher_defaults_or_deprecation_warnings(short_run):
    proc, _, _ = short_run
    assert "were not passed to `accelerate launch`" not in proc.stderr
    assert "Warning" not in proc.stderr and "deprecated" not in proc.stderr, proc.stderr[-3000:]
    assert "gemm_4bit_forward" not in proc.stderr and "Traceback" not in proc.stderr


def test_toy_model_build_says_what_and_where_and_leaves_no_temp_folder(short_run):
    proc, _, cache = short_run
    path = cache / "toy-tiny-llama"
    assert proc.stdout.count("building the toy model toy://tiny-llama") == 1
    assert f"into {path}" in proc.stdout
    assert sorted(p.name for p in cache.iterdir()) == ["toy-tiny-llama"]  # no .tmp folders left
    assert is_complete(path) and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def test_half_written_toy_model_is_rebuilt(tmp_path, capsys):
    """A folder without the build marker (an interrupted build, or an older cache) is not loaded: it is replaced."""
    path = tmp_path / "toy-tiny-llama"
    path.mkdir()
    (path / "config.json").write_text("{}")  # the config, but no weights, no tokenizer, no marker
    assert not is_complete(path)
    assert resolve_model(TOY_MODEL, cache_dir=str(tmp_path)) == str(path)
    assert "building the toy model toy://tiny-llama" in capsys.readouterr().out
    assert is_complete(path) and (path / "model.safetensors").is_file()
    assert json.loads((path / BUILD_MARKER).read_text())["name"] == TOY_MODEL
    assert [p.name for p in tmp_path.iterdir()] == ["toy-tiny-llama"]
    # Complete now: the next call only returns the path
    assert resolve_model(TOY_MODEL, cache_dir=str(tmp_path)) == str(path)
    assert capsys.readouterr().out == ""


def test_concurrent_build_keeps_the_folder_finished_first(tmp_path):
    path = tmp_path / "model"

    def build(folder):  # while this run builds, another one finishes `path`
        (folder / "weights").write_text("mine")
        path.mkdir()
        (path / "weights").write_text("theirs")
        (path / BUILD_MARKER).write_text("{}")

    assert build_atomically(path, build, "toy://x") == path
    assert (path / "weights").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_build_leaves_nothing(tmp_path):
    def build(folder):
        (folder / "weights").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_atomically(tmp_path / "model", build, "toy://x")
    assert list(tmp_path.iterdir()) == []


def test_bitsandbytes_cpu_kernel_notice_is_dropped(caplog):
    import hf_safety.scripts.derta  # noqa: F401  (installs the filter)

    bnb_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        bnb_logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "offline")
        bnb_logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_derta_without_arguments_prints_usage(capsys):
    assert cli_main(["derta"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hf-safety derta --config") and "recipes/derta/toy.yaml" in err


def test_readme_output_folders_are_git_ignored():
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {"outputs/", "eval_out/", "eval_out_py/"} <= ignored
