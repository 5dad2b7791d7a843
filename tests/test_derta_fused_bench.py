"""bench/derta_fused.py at tiny sizes, one repetition: its JSON, and the two DeRTa forms' equal loss on its batch."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).parent.parent
spec = importlib.util.spec_from_file_location("derta_fused", ROOT / "bench" / "derta_fused.py")
derta_fused = sys.modules["derta_fused"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(derta_fused)

TINY = [
    "--steps", "2", "--rounds", "1", "--warmup-rounds", "0", "--harmful-rows", "3", "--benign-rows", "1",
    "--prompt-tokens", "12", "--harmful-tokens", "30", "--safe-tokens", "10", "--vocab", "60",
    "--hidden-size", "32", "--layers", "2", "--heads", "4", "--seed", "3",
]  # fmt: skip


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    torch_threads = torch.get_num_threads()
    output = tmp_path_factory.mktemp("bench") / "derta_fused.json"
    try:
        derta_fused.main([*TINY, "--no-memory", "--output", str(output)])
    finally:
        torch.set_num_threads(torch_threads)
    return json.loads(output.read_text())


def test_json_schema(result):
    assert result["benchmark"] == "derta_fused"
    for key in ("type", "name", "cpu_count", "torch_threads", "platform", "python"):
        assert key in result["device"]
    assert {"torch", "transformers", "trl", "datasets"} <= set(result["versions"])
    arms = ("naive", "fused", "fused_padding_free")
    ratios = [f"{arm}_over_{base}" for arm in arms[1:] for base in ("naive_per_harmful_row", "sft_per_trained_token")]
    assert set(result["targets"]) == {
        *ratios,
        "fused_over_naive_peak_memory",
        "fused_padding_free_over_naive_peak_memory",
    }
    assert set(result["pass"]) == set(ratios) and all(isinstance(v, bool) for v in result["pass"].values())
    for block in ("ratio", "ratio_min_per_step", "ratio_median_of_rounds"):
        assert set(result[block]) == {*ratios, "naive_over_sft_per_trained_token"}
        assert all(v > 0 for v in result[block].values())
    assert set(result["seconds_per_round"]) == {*arms, "sft"}
    assert set(result["seconds_per_harmful_row"]) == set(arms)
    assert result["ratio"]["fused_over_naive_per_harmful_row"] == pytest.approx(
        result["seconds_per_round"]["fused"] / result["seconds_per_round"]["naive"]
    )
    assert result["harmful_rows_per_round"] == 2 * 3
    assert len(result["rounds"]) == 1 and len(result["rounds"][0]) == 2
    assert set(result["rounds"][0][0]) == {*arms, "sft"}
    assert set(result["rounds"][0][0]["fused"]) == {"fetch", "collate", "fwd_bwd", "optim"}
    assert result["memory"] is None and result["config"]["no_memory"] is True
    # the fused form: one sequence per harmful row, fewer input tokens, the same trained tokens
    naive, fused, packed = (result["step_tokens"][arm] for arm in arms)
    assert [t["sequences"] for t in naive] == [2 * 3 + 1] * 2 and [t["sequences"] for t in fused] == [3 + 1] * 2
    assert [t["labelled"] for t in naive] == [t["labelled"] for t in fused] == [t["labelled"] for t in packed]
    assert all(f["input"] < n["input"] for n, f in zip(naive, fused))
    # padding-free: the same fused sequences, packed into rows of the longest (here each harmful row fills one and
    # the benign row does not fit beside it: tests/test_derta_fused.py shows the packing by hand)
    assert [t["sequences"] for t in packed] == [3 + 1] * 2 and all(t["rows"] <= 3 + 1 for t in packed)
    assert [t["input"] for t in packed] == [t["input"] for t in fused]
    assert all(p["padded"] <= f["padded"] for f, p in zip(fused, packed))
    assert result["labelled_tokens_per_round"] == sum(t["labelled"] for t in naive)


def test_forms_have_equal_loss_on_the_benched_batch(result):
    check = result["loss_check"]
    assert check["abs_diff"] < 1e-5
    assert check["naive"] == pytest.approx(check["fused"], abs=1e-5)
    assert check["naive"] == pytest.approx(check["fused_padding_free"], abs=1e-5)
    assert check["naive"] > 1.0  # a random model: a real loss, not an empty batch


def test_loss_check_sees_a_broken_mask(tmp_path):
    # the check has teeth: with a plain causal mask instead of the tree, the fused loss differs (weights larger than
    # the random init's, so that the tiny model's outputs depend on what its attention sees)
    args = derta_fused.parse_args(TINY)
    setup = derta_fused.build(args, str(tmp_path), names=("naive", "fused", "fused_padding_free"))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in setup["naive"][0].model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.2)
    check = derta_fused.loss_check(setup)
    assert check["abs_diff"] < 1e-5
    for arm in ("fused", "fused_padding_free"):
        batch = setup["reference"][arm][0]
        assert batch["attention_mask"].dim() == 4
        mask = batch["attention_mask"].clone()
        n = batch["input_ids"].shape[1]
        batch["attention_mask"] = torch.ones(n, n, dtype=torch.bool).tril().expand_as(mask).clone()
        broken = derta_fused.loss_check(setup)
        assert abs(broken["naive"] - broken[arm]) > 1e-2, arm
        batch["attention_mask"] = mask


def test_memory_worker_figures(tmp_path):
    args = derta_fused.parse_args([*TINY, "--worker", "fused", "--worker-output", str(tmp_path / "m.json")])
    figures = derta_fused.memory_worker(args)
    assert figures["measure"].startswith("peak RSS (VmHWM")
    assert figures["peak_mib"] >= figures["before_steps_mib"] > 0 and figures["rise_mib"] >= 0
