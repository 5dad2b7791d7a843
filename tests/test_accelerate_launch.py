"""`accelerate launch` with the configs of recipes/accelerate/: DeRTa on 2 CPU processes trains as 1 process does at the
same global batch, SEAS's rounds run on 2 processes with the attack stage of 1 process, and every config reads as its
header says."""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env
from safetensors.torch import load_file
from testing_utils import toy_corpus, toy_rows

from hf_safety.toy import TOY_SEAS_MODELS, build_tokenizer, resolve_model, tiny_model


ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "recipes" / "accelerate"
# The Trainer's own log of the run's shape: the main process (--log_level) and the others (--log_level_replica) each
# write it, so the number of lines is the number of processes that trained
TOTAL_BATCH = re.compile(r"Total train batch size \(w\. parallel, distributed & accumulation\) = (\d+)")
LOG_EVERY_PROCESS = ["--log_level", "info", "--log_level_replica", "info", "--disable_tqdm", "true"]


def launch(config: str, script: str, args: list[str]) -> subprocess.Popen:
    """`accelerate launch --config_file recipes/accelerate/<config> recipes/<script> <args>`, started."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config)]
    # One torch thread per process in both runs (torchrun's default for several): the same CPU kernels, so the same
    # float results for the same batch
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [*command, str(ROOT / "recipes" / script), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    """Waits for a launched run; its output (both processes', interleaved), or the failure with the output's end."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-6000:]
    return output


def run_side_by_side(one: tuple, two: tuple) -> tuple[str, str]:
    """The 1-process and the 2-process run at the same time (they share the machine's cores; total time is what
    counts)."""
    started = launch("cpu.yaml", *one), launch("cpu_2proc.yaml", *two)
    return finish(started[0]), finish(started[1])


def world_sizes(output: str) -> list[int]:
    """Per trainer log line: how many processes the run trained on (total batch / per-device batch)."""
    per_device = [int(n) for n in re.findall(r"Instantaneous batch size per device = (\d+)", output)]
    return [int(total) // n for total, n in zip(TOTAL_BATCH.findall(output), per_device)]


def losses(output_dir: Path) -> list[tuple[int, float, float]]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [(log["step"], log["loss"], log["grad_norm"]) for log in history if "loss" in log]


# -- DeRTa ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def derta_runs(tmp_path_factory):
    """The same small recipe (a tiny Llama and 16 rows written here, 2 epochs of SGD, 4 steps) launched with cpu.yaml at
    batch 8 and with cpu_2proc.yaml at batch 4 per process."""
    root = tmp_path_factory.mktemp("derta-launch")
    tokenizer = build_tokenizer(toy_corpus())
    tiny_model(tokenizer).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    rows = toy_rows()
    rows = [r for r in rows if r["rejected"]][:8] + [r for r in rows if not r["rejected"]][:8]
    with open(root / "train.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    recipe = yaml.safe_load((ROOT / "recipes" / "derta" / "toy.yaml").read_text())
    recipe.update(
        model_name_or_path=str(root / "model"),
        dataset_name=str(root / "train.jsonl"),
        rto_weight=0.5,
        num_train_epochs=2,
        optim="sgd",  # plain SGD: Adam would blow up float noise on near-zero gradients into visible differences
        learning_rate=0.5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
    )
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    args = ["--config", str(root / "recipe.yaml"), *LOG_EVERY_PROCESS]
    one, two = run_side_by_side(
        ("derta_llama3.py", [*args, "--output_dir", str(root / "p1"), "--per_device_train_batch_size", "8"]),
        ("derta_llama3.py", [*args, "--output_dir", str(root / "p2"), "--per_device_train_batch_size", "4"]),
    )
    return root, one, two


@pytest.mark.slow
def test_derta_two_processes_match_one(derta_runs):
    root, one, two = derta_runs
    assert world_sizes(one) == [1] and world_sizes(two) == [2, 2]  # rank 0 and rank 1 each trained, knowing of 2
    first, second = losses(root / "p1"), losses(root / "p2")
    # Same rows in each step (the sampler's order is the same; DeRTa's draws are keyed by row, not by process), so the
    # same losses and gradients up to float32 summation order (the all-reduce adds two half-batch gradients; the
    # logged loss is the mean of the two processes'): ~1e-7 relative per step here, a wrong batch or normalisation
    # moves them by 1e-2 or more
    assert [s for s, *_ in first] == [s for s, *_ in second] == [1, 2, 3, 4]
    for (_, loss_1, norm_1), (_, loss_2, norm_2) in zip(first, second):
        assert loss_2 == pytest.approx(loss_1, rel=1e-5) and norm_2 == pytest.approx(norm_1, rel=1e-5)
    weights_1, weights_2 = load_file(root / "p1" / "model.safetensors"), load_file(root / "p2" / "model.safetensors")
    assert weights_1.keys() == weights_2.keys()
    for name in weights_1:
        assert torch.allclose(weights_1[name], weights_2[name], rtol=1e-5, atol=1e-6), name


# -- SEAS -------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seas_runs(tmp_path_factory):
    """One round of the toy SEAS recipe, shortened (8 seeds in two attack chunks of 4, 2 prompts each), on 1 process at
    batch 16 and on 2 processes at batch 8 each."""
    for name in TOY_SEAS_MODELS:  # built once (a no-op when cached), before two runs race to build them
        resolve_model(name)
    root = tmp_path_factory.mktemp("seas-launch")
    args = ["--config", str(ROOT / "recipes" / "seas" / "toy.yaml"), "--num_iterations", "1"]
    args += ["--seeds_per_iteration", "8", "--attack_chunk_size", "4", "--num_adversarial_prompts", "2"]
    args += ["--logging_steps", "1", *LOG_EVERY_PROCESS]
    one, two = run_side_by_side(
        ("seas_llama3.py", [*args, "--output_dir", str(root / "p1"), "--per_device_train_batch_size", "16"]),
        ("seas_llama3.py", [*args, "--output_dir", str(root / "p2"), "--per_device_train_batch_size", "8"]),
    )
    return root, one, two


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.mark.slow
def test_seas_round_on_two_processes(seas_runs):
    root, one, two = seas_runs
    assert set(world_sizes(one)) == {1} and set(world_sizes(two)) == {2}
    assert len(world_sizes(two)) == 2 * len(world_sizes(one))  # every DPO run (red team, target) on both processes
    first, second = (root / "p1" / "iteration_0", root / "p2" / "iteration_0")

    # The attack stage is split between the processes by chunks of seeds, each chunk sampled from a seed of its own:
    # the same log, pairs and counts as on one process
    log = table(second / "attack_log.parquet")
    assert len(log) == len({(r["seed_index"], r["adversarial_index"], r["response_index"]) for r in log}) == 8 * 2 * 4
    for name in ("attack_log", "red_team_pairs", "target_pairs"):
        assert table(second / f"{name}.parquet") == table(first / f"{name}.parquet"), name
    assert json.loads((second / "attack_stats.json").read_text()) == json.loads(
        (first / "attack_stats.json").read_text()
    )
    rounds = [json.loads((root / p / "results.json").read_text())["rounds"] for p in ("p1", "p2")]
    assert [len(r) for r in rounds] == [1, 1]
    attack_metrics = ("red_team_asr", "num_responses", "num_red_team_pairs", "num_target_pairs", "prompt_distinct_2")
    assert {k: rounds[1][0][k] for k in attack_metrics} == {k: rounds[0][0][k] for k in attack_metrics}
    assert 0.0 <= rounds[1][0]["target_asr"] <= 1.0  # the evaluation ran (on the main process) and reached all
    assert (second / "eval" / "report.json").is_file()

    # Both sides trained on 2 processes: new weights, saved once with their cards; the round's stages all recorded
    assert rounds[1][0]["num_red_team_pairs"] > 0 and rounds[1][0]["num_target_pairs"] > 0
    for side, start in zip(("red_team", "target"), (TOY_SEAS_MODELS[1], TOY_SEAS_MODELS[0])):
        before = load_file(Path(resolve_model(start)) / "model.safetensors")
        after = load_file(second / side / "model.safetensors")
        assert any(not torch.equal(before[k], after[k]) for k in before), side
        assert (second / side / "README.md").is_file()
    state = json.loads((root / "p2" / "seas_state.json").read_text())
    assert state["stages"] == {"0": ["attack", "pairs", "red_team", "target"]}
    assert not list((root / "p2").rglob(".*tmp*"))


# -- the configs ------------------------------------------------------------------------------------------------------


def resolved_launch_args(config: Path):
    """What `accelerate launch --config_file <config>` decides, without launching."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args, _, _ = _validate_launch_command(args)
    return args


def launch_arguments() -> set[str]:
    return {action.dest for action in launch_command_parser()._actions}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_parses_with_accelerate_and_documents_itself(path):
    config = load_config_from_file(str(path))  # accelerate's own loader: unknown top-level keys are an error
    header = path.read_text().split("compute_environment:")[0]
    assert "accelerate launch --config_file recipes/accelerate/" + path.name in header
    assert "recipe" in header  # what the recipe must set
    # Nested keys are copied onto the launcher's arguments by name: a misspelled one would be silently ignored
    nested = {**config.fsdp_config, **config.deepspeed_config}
    assert set(nested) <= launch_arguments(), set(nested) - launch_arguments()


def test_cpu_2proc_starts_two_processes_through_torchrun():
    args = resolved_launch_args(CONFIGS / "cpu_2proc.yaml")
    assert args.multi_gpu and not args.cpu and args.num_processes == 2  # multi_gpu_launcher: torch elastic
    assert args.main_process_port == 0  # a free port, not 29500: runs (and other tests) can share the machine


def test_fsdp_qlora_config():
    args = resolved_launch_args(CONFIGS / "fsdp_qlora.yaml")
    assert args.use_fsdp and args.mixed_precision == "bf16"
    env = prepare_multi_gpu_env(args)  # what the processes' FSDP plugin is built from
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "1"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == env["FSDP_SYNC_MODULE_STATES"] == "true"
    assert env["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT"
    assert env["FSDP_USE_ORIG_PARAMS"] == "false" and env["FSDP_OFFLOAD_PARAMS"] == "false"
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "false"  # the recipe's activation_checkpointing, not both
    assert "bnb_4bit_quant_storage: bfloat16" in (CONFIGS / "fsdp_qlora.yaml").read_text()


def test_deepspeed_zero3_config():
    config = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml"))
    assert config.distributed_type == "DEEPSPEED" and config.mixed_precision == "bf16"
    args = resolved_launch_args(CONFIGS / "deepspeed_zero3.yaml")  # DeepSpeed itself is not installed here
    assert args.use_deepspeed and args.zero_stage == 3 and args.zero3_init_flag and args.zero3_save_16bit_model
    assert args.offload_optimizer_device == args.offload_param_device == "none"
    assert "use_reentrant=True" in (CONFIGS / "deepspeed_zero3.yaml").read_text()
