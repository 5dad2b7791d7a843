"""bench/judge_throughput.py at tiny sizes, one round: its JSON, and every path's verdicts equal one-by-one decoding's."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "bench"))
spec = importlib.util.spec_from_file_location("judge_throughput", ROOT / "bench" / "judge_throughput.py")
judge_throughput = sys.modules["judge_throughput"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(judge_throughput)

TINY = ["--inputs", "12", "--rounds", "1", "--warmup-rounds", "0", "--batch-size", "4", "--hidden-size", "32",
        "--layers", "1", "--unsafe-share", "0.5", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    threads = torch.get_num_threads()
    output = tmp_path_factory.mktemp("bench") / "judge_throughput.json"
    try:
        judge_throughput.main([*TINY, "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    return json.loads(output.read_text())


def test_json_schema_and_paths(result):
    assert result["benchmark"] == "judge_throughput"
    paths = ("decode", "score", "score+prefix", "score+groups")
    assert set(result["modes"]) == {f"{p}@{b}" for p in paths for b in (1, 4)}
    paths = {name: mode["judge_path"] for name, mode in result["modes"].items()}
    assert paths["decode@1"] == "decode" and paths["score@4"] == "score-only"
    assert paths["score+prefix@1"] == paths["score+groups@4"] == "score-only+shared-prefix"
    for key in ("score_prefix_vs_decode_at_batch_1", "score_prefix_batched_vs_decode_one_by_one"):
        assert result["ratios"][key] > 0 and isinstance(result["targets"][key], bool)
    assert result["inputs"]["shared_prefix_tokens"] > 100 and result["model"]["answers_option"] == "guard"
    assert {"type", "cpu_count", "torch_threads"} <= set(result["device"])


def test_every_path_gives_the_same_verdicts(result):
    mix = result["verdict_mix"]
    assert mix["unsafe"] > 0 and mix["safe"] > 0 and mix["unknown"] == 0
    for mode in result["modes"].values():
        assert mode["verdict_mismatches"] == mode["category_mismatches"] == mode["score_presence_mismatches"] == 0
        assert mode["max_score_diff"] < 1e-5


def test_shape_true_config_builds(tmp_path):
    """The 8B-shaped model's config, cut to one layer of a smaller width, builds on the CPU (the GPU run uses it
    whole)."""
    args = judge_throughput.parse_args(["--shape-true", "--layers", "1", "--device", "cpu"])
    config_file = judge_throughput.SHAPE_TRUE_CONFIG
    assert json.loads(config_file.read_text())["hidden_size"] == 4096
    args.answers = "guard"
    with torch.device("meta"):  # shapes only: 1 layer of 4096 wide plus a 128256 vocabulary is ~1B parameters
        model, tokenizer, rig = judge_throughput.build_model(args, torch.device("meta"), torch.bfloat16)
    assert model.config.hidden_size == 4096 and model.config.vocab_size == 128256
    assert model.config.num_hidden_layers == 1 and model.config.eos_token_id == tokenizer.eos_token_id
    rig.remove()


def test_seas_pairs_are_distinct_with_m_answers_per_prompt():
    prompts, responses = judge_throughput.pairs(40, "seas", answers_per_prompt=4)
    assert len(set(zip(prompts, responses))) == 40 and len(set(prompts)) == 10
    for k in range(0, 40, 4):  # one adversarial prompt, its m answers next to it, all different
        assert len(set(prompts[k : k + 4])) == 1 and len(set(responses[k : k + 4])) == 4
    openings = [attack.split("{request}")[0] for attack in judge_throughput.ATTACKS]
    assert all(any(p.startswith(opening) for opening in openings) for p in prompts)
    toy = judge_throughput.pairs(100)
    assert len(set(zip(*toy))) == 100
    with pytest.raises(SystemExit, match="100 distinct pairs"):  # never cycled: repeats would share whole inputs
        judge_throughput.pairs(101)


def test_shieldgemma_groups_bench(tmp_path):
    """bench/shieldgemma_groups.py at tiny sizes: the same verdicts in every setting, and at batch size 1 the groups
    compute fewer tokens than the call prefix alone, which computes fewer than no prefix."""
    spec = importlib.util.spec_from_file_location("shieldgemma_groups", ROOT / "bench" / "shieldgemma_groups.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--inputs", "8", "--rounds", "1", "--hidden-size", "32", "--layers", "1",
                             "--batch-size", "4", "--device", "cpu", "--output", str(tmp_path / "sg.json")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    modes = result["modes"]
    assert all(m["verdict_mismatches"] == 0 and m["max_score_diff"] < 1e-5 for m in modes.values())
    tokens = {name: modes[f"{name}@1"]["tokens_computed"] for name in ("no-prefix", "call-prefix", "groups")}
    assert tokens["groups"] < tokens["call-prefix"] < tokens["no-prefix"]
    assert result["inputs"]["principles"] == 4 and json.loads((tmp_path / "sg.json").read_text())["modes"] == modes
