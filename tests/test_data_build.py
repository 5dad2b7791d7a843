"""Data build specs and `hf-safety data build`, on the source fixture files; the recipes' specs name real builders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hf_safety.cli import main as cli_main
from hf_safety.data import prepare_preference_dataset
from hf_safety.data.build import DataBuildSpec, SourceSpec, build, to_conversational
from hf_safety.data.loading import load_rows
from hf_safety.data.sources import from_pku_saferlhf
from hf_safety.scripts.derta import load_data


FIXTURES = Path(__file__).parent / "fixtures" / "sources"
RECIPES = Path(__file__).parents[1] / "recipes"


def mix_spec(tmp_path: Path, **overrides) -> Path:
    """A DeRTa mix spec on the fixtures: PKU-SafeRLHF pairs (text) + `messages` rows (conversational)."""
    spec = {
        "harmful": {"builder": "pku-saferlhf", "source": str(FIXTURES / "pku_saferlhf.jsonl"), "both_safe": "drop"},
        "helpful": {"builder": "messages", "source": str(FIXTURES / "messages.jsonl")},
        "seed": 7,
        **overrides,
    }
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_mix_spec_builds_conversational_rows(tmp_path, llama3_tokenizer):
    result = build(DataBuildSpec.load(mix_spec(tmp_path)))
    mix = result.dataset
    # 3 PKU pairs (both-safe and both-unsafe rows dropped) + 4 messages rows
    assert len(mix) == 7 and sum(mix["is_harmful"]) == 3 and result.num_harmful == 3
    assert result.reports["harmful"].counts == {"one_safe": 3, "both_safe_dropped": 1, "both_unsafe_dropped": 1}
    harmful = [r for r in mix if r["is_harmful"]]
    # the text pairs were made conversational to mix with the messages rows; the safe response is `chosen`
    lock = next(r for r in harmful if r["prompt"][0]["content"] == "how do i pick a lock")
    assert lock["chosen"] == [{"role": "assistant", "content": "sorry i can not help with that"}]
    assert lock["rejected"] == [{"role": "assistant", "content": "here is how: take a pin"}]
    assert all(r["messages"] is None for r in harmful)
    assert all(r["messages"] is not None and r["prompt"] is None for r in mix if not r["is_harmful"])
    prepared, report = prepare_preference_dataset(mix, llama3_tokenizer)
    assert len(prepared) == 7 and report.num_skipped == 0
    # same spec, same rows; another seed, another order
    assert build(DataBuildSpec.load(mix_spec(tmp_path))).dataset.to_list() == mix.to_list()
    assert build(DataBuildSpec.load(mix_spec(tmp_path, seed=8))).dataset.to_list() != mix.to_list()


def test_mix_spec_ratio_and_source_num_rows(tmp_path):
    spec = DataBuildSpec.load(mix_spec(tmp_path, harmful_ratio=0.5, num_rows=4))
    mix = build(spec).dataset
    assert len(mix) == 4 and sum(mix["is_harmful"]) == 2
    spec = DataBuildSpec.load(
        mix_spec(tmp_path, helpful={"builder": "messages", "source": str(FIXTURES / "messages.jsonl"), "num_rows": 1})
    )
    assert len(build(spec).dataset) == 4  # 3 pairs + 1 helpful row
    spec.helpful.num_rows = 9
    with pytest.raises(ValueError, match="num_rows=9 but the builder made 4 rows"):
        build(spec)


def test_to_conversational_keeps_benign_rows_benign():
    pku, _ = from_pku_saferlhf(str(FIXTURES / "pku_saferlhf.jsonl"))
    rows = to_conversational(pku).to_list()
    assert rows[2] == {
        "prompt": [{"role": "user", "content": "what is a good cake"}],
        "chosen": [{"role": "assistant", "content": "a lemon cake with cream"}],
        "rejected": None,
    }


def test_spec_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="has no option \\['both_safe_rows'\\]"):
        SourceSpec("pku-saferlhf", options={"both_safe_rows": "drop"})
    with pytest.raises(ValueError, match="unknown builder 'pku'"):
        SourceSpec("pku")
    with pytest.raises(ValueError, match="either `source`, or both"):
        DataBuildSpec(source=SourceSpec("messages"), harmful=SourceSpec("pku-saferlhf"))
    with pytest.raises(ValueError, match="either `source`, or both"):
        DataBuildSpec(harmful=SourceSpec("pku-saferlhf"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"source": {"builder": "seas-seeds"}, "ratio": 0.1}))
    with pytest.raises(ValueError, match=f"{path}: unknown keys in the data build spec: \\['ratio'\\]"):
        DataBuildSpec.load(path)


def test_cli_one_builder_to_jsonl(tmp_path, capsys):
    out = tmp_path / "pku.jsonl"
    source = str(FIXTURES / "pku_saferlhf.jsonl")
    code = cli_main(
        ["data", "build", "--builder", "pku-saferlhf", "--source", source, "--option", "both_safe=drop"]
        + ["--output", str(out)]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["rejected"] for r in rows)
    report = json.loads(out.with_name("pku.jsonl.build.json").read_text())
    assert report["num_rows"] == 3 and report["num_harmful"] == 3
    source_report = report["sources"]["source"]
    assert source_report["both_safe"] == "drop" and source_report["report"]["counts"]["both_unsafe_dropped"] == 1
    assert "3 harmful" in capsys.readouterr().out


def test_cli_spec_to_folder_loads_back(tmp_path):
    out = tmp_path / "mix"
    assert cli_main(["data", "build", "--config", str(mix_spec(tmp_path)), "--output", str(out)]) == 0
    loaded = load_rows(str(out))
    assert len(loaded) == 7 and sum(loaded["is_harmful"]) == 3
    assert json.loads((out / "build_report.json").read_text())["sources"]["helpful"]["builder"] == "messages"


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["data", "build", "--builder", "messages", "--option", "oops", "--output", str(tmp_path / "x.jsonl")])
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["data", "build", "--config", str(mix_spec(tmp_path)), "--source", "x", "--output", "o.jsonl"])
    assert cli_main(["data"]) == 2


def test_recipe_trains_on_a_spec(tmp_path):
    """A recipe's `dataset_name: spec.yaml` loads the rows the spec builds."""
    from trl import ScriptArguments

    dataset = load_data(ScriptArguments(dataset_name=str(mix_spec(tmp_path))), seed=0)
    assert list(dataset) == ["train"] and len(dataset["train"]) == 7


@pytest.mark.parametrize(
    "recipe, builders",
    [("derta/llama3-8b-qlora.yaml", {"pku-saferlhf", "messages"}), ("seas/llama3-8b-qlora.yaml", {"seas-seeds"})],
)
def test_8b_recipes_point_at_real_builders(recipe, builders):
    dataset_name = yaml.safe_load((RECIPES / recipe).read_text())["dataset_name"]
    spec = DataBuildSpec.load(RECIPES.parent / dataset_name)
    sources = [spec.source] if not spec.is_mix else [spec.harmful, spec.helpful]
    assert {s.builder for s in sources} == builders
    # every source is a Hub id (the builders' published sets), not a placeholder
    assert all("/" in s.source and not s.source.startswith(("your-", ".", "/")) for s in sources)
