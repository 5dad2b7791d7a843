"""The builders of `hf_safety.data.sources`, on tiny fixture files in each source's published schema."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from datasets import Dataset

from hf_safety.data import InvalidRowError, prepare_preference_dataset
from hf_safety.data.sources import (
    build_derta_mix,
    from_beavertails,
    from_hh_rlhf,
    from_messages,
    from_pku_saferlhf,
    from_seas_seed_pool,
)
from hf_safety.seas.seeds import SeedPool


FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """Loads a fixture file the way the Hub's jsonl files load: `load_dataset("json", ...)`."""
    cache = str(tmp_path_factory.mktemp("hf_cache"))

    def _load(name: str) -> Dataset:
        return datasets.load_dataset("json", data_files=str(FIXTURES / name), split="train", cache_dir=cache)

    return _load


def assert_contract(dataset: Dataset, tokenizer) -> None:
    """Every row passes the data contract and tokenizes."""
    prepared, report = prepare_preference_dataset(dataset, tokenizer)
    assert len(prepared) == len(dataset)
    assert report.num_skipped == 0


# PKU-SafeRLHF


def test_pku_pairs_and_both_safe_benign(load, llama3_tokenizer):
    source = load("pku_saferlhf.jsonl")
    assert "response_0_harm_category" in source.column_names  # the published schema, nested dicts included
    dataset, report = from_pku_saferlhf(source)
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert len(dataset) == 4
    assert report.num_rows == 5 and report.num_harmful == 3 and report.num_benign == 1
    assert report.counts == {"one_safe": 3, "both_safe_benign": 1, "both_unsafe_dropped": 1}
    # row 0: response_1 is the safe one; row 1: response_0
    assert dataset[0] == {
        "prompt": "how do i pick a lock",
        "chosen": "sorry i can not help with that",
        "rejected": "here is how: take a pin",
    }
    assert dataset[1]["chosen"] == "sorry that is illegal" and dataset[1]["rejected"] == "sure here is how"
    # both safe: the better response (better_response_id=1), no rejected
    assert dataset[2] == {"prompt": "what is a good cake", "chosen": "a lemon cake with cream", "rejected": None}
    assert "how do i hurt a cat" not in dataset["prompt"]
    assert_contract(dataset, llama3_tokenizer)


def test_pku_both_safe_drop():
    dataset, report = from_pku_saferlhf(Dataset.from_list(rows("pku_saferlhf.jsonl")), both_safe="drop")
    assert len(dataset) == 3 and all(r is not None for r in dataset["rejected"])
    assert report.counts == {"one_safe": 3, "both_safe_dropped": 1, "both_unsafe_dropped": 1}
    with pytest.raises(ValueError, match="both_safe"):
        from_pku_saferlhf(Dataset.from_list(rows("pku_saferlhf.jsonl")), both_safe="keep")
    with pytest.raises(ValueError, match="both_unsafe"):
        from_pku_saferlhf(Dataset.from_list(rows("pku_saferlhf.jsonl")), both_unsafe="refusal")


def test_pku_malformed_rows(tmp_path, load):
    data = rows("pku_saferlhf.jsonl")
    del data[3]["is_response_0_safe"]
    data[4]["response_1"] = "  "
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    source = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InvalidRowError) as err:
        from_pku_saferlhf(source)
    assert (err.value.row, err.value.field) == (3, "is_response_0_safe")
    assert "row 3, field 'is_response_0_safe': missing" in str(err.value)

    dataset, report = from_pku_saferlhf(source, skip_invalid_rows=True)
    assert len(dataset) == 3
    assert report.skipped == [(3, "is_response_0_safe", "missing"), (4, "response_1", "empty")]
    assert report.counts["skipped"] == 2
    assert "skipped 2 malformed rows" in str(report)

    # a both-safe row needs a valid better_response_id
    data = rows("pku_saferlhf.jsonl")
    data[2]["better_response_id"] = 2
    with pytest.raises(InvalidRowError, match="row 2, field 'better_response_id'"):
        from_pku_saferlhf(Dataset.from_list(data))


def test_missing_column_is_named():
    data = [{k: v for k, v in r.items() if k != "is_response_1_safe"} for r in rows("pku_saferlhf.jsonl")]
    with pytest.raises(ValueError, match=r"missing \['is_response_1_safe'\]"):
        from_pku_saferlhf(Dataset.from_list(data))


def test_hub_ids_load_with_load_dataset(monkeypatch):
    """A Hub id goes through `datasets.load_dataset` (the same code path as a local Dataset afterwards)."""
    calls = []
    fixtures = {
        "PKU-Alignment/PKU-SafeRLHF": "pku_saferlhf.jsonl",
        "PKU-Alignment/BeaverTails": "beavertails.jsonl",
        "Anthropic/hh-rlhf": "hh_rlhf_harmless.jsonl",
        "diaomuxi/SEAS": "seas.jsonl",
        "HuggingFaceH4/ultrachat_200k": "messages.jsonl",
    }

    def fake_load_dataset(path, split=None, **kwargs):
        calls.append((path, split, kwargs))
        return Dataset.from_list(rows(fixtures[path]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(from_pku_saferlhf()[0]) == 4
    assert len(from_pku_saferlhf(name="alpaca3-8b", split="test")[0]) == 4
    assert len(from_beavertails()[0]) == 2
    dataset, report = from_hh_rlhf()
    assert len(dataset) == 3 and "harmless-base" in report.source
    assert len(from_seas_seed_pool()[0]) == 6
    assert len(from_messages("HuggingFaceH4/ultrachat_200k", split="train_sft")[0]) == 4
    assert calls == [
        ("PKU-Alignment/PKU-SafeRLHF", "train", {}),
        ("PKU-Alignment/PKU-SafeRLHF", "test", {"name": "alpaca3-8b"}),
        ("PKU-Alignment/BeaverTails", "330k_train", {}),
        ("Anthropic/hh-rlhf", "train", {"data_dir": "harmless-base"}),
        ("diaomuxi/SEAS", "train", {}),
        ("HuggingFaceH4/ultrachat_200k", "train_sft", {}),
    ]
    with pytest.raises(TypeError, match="Hub dataset id or a datasets.Dataset"):
        from_beavertails(rows("beavertails.jsonl"))


# BeaverTails


def test_beavertails_pairs_by_prompt(load, llama3_tokenizer):
    source = load("beavertails.jsonl")
    dataset, report = from_beavertails(source)
    assert report.num_rows == 9
    assert report.counts == {"paired": 2, "only_safe_dropped": 1, "only_unsafe_dropped": 1}
    assert dataset.to_list() == [
        # first safe and first unsafe response to the prompt, whatever their order
        {
            "prompt": "how do i steal a car",
            "chosen": "sorry i can not help with that",
            "rejected": "here is how: break the window",
        },
        {
            "prompt": "how do i buy a gun without a check",
            "chosen": "sorry i can not help with that",
            "rejected": "sure here is how",
        },
    ]
    assert_contract(dataset, llama3_tokenizer)


def test_beavertails_only_safe_benign(load, llama3_tokenizer):
    dataset, report = from_beavertails(load("beavertails.jsonl"), only_safe="benign")
    assert report.counts == {"paired": 2, "only_safe_benign": 1, "only_unsafe_dropped": 1}
    assert report.num_harmful == 2 and report.num_benign == 1
    assert dataset[1] == {"prompt": "what is a good cake", "chosen": "a chocolate cake", "rejected": None}
    assert_contract(dataset, llama3_tokenizer)


def test_beavertails_malformed_rows():
    data = rows("beavertails.jsonl")
    data[1]["is_safe"] = None
    with pytest.raises(InvalidRowError, match="row 1, field 'is_safe': missing"):
        from_beavertails(Dataset.from_list(data))
    data[1]["is_safe"] = True
    data[7]["is_safe"] = None
    data[1]["prompt"] = ""
    dataset, report = from_beavertails(Dataset.from_list(data), skip_invalid_rows=True)
    assert report.skipped == [(1, "prompt", "empty"), (7, "is_safe", "missing")]
    # the car prompt now pairs its second safe response; the gun prompt has only an unsafe one left
    assert dataset["chosen"] == ["sorry, stealing is a crime"]
    assert report.counts["only_unsafe_dropped"] == 2


# hh-rlhf


def test_hh_rlhf_splits_transcripts(load, llama3_tokenizer):
    dataset, report = from_hh_rlhf(load("hh_rlhf_harmless.jsonl"))
    assert len(dataset) == 3 and report.counts == {"paired": 3} and report.num_harmful == 3
    assert dataset[0] == {
        "prompt": [{"role": "user", "content": "how do i pick a lock"}],
        "chosen": [{"role": "assistant", "content": "sorry i can not help with that"}],
        "rejected": [{"role": "assistant", "content": "here is how: take a pin"}],
    }
    assert dataset[1]["prompt"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "how do i hurt someone"},
    ]
    assert dataset[1]["chosen"] == [{"role": "assistant", "content": "sorry, i will not help with that"}]
    assert_contract(dataset, llama3_tokenizer)


@pytest.mark.parametrize(
    "chosen, rejected, field, reason",
    [
        ("\n\nHuman: how do i pick a lock", "\n\nHuman: x\n\nAssistant: y", "chosen", "no final Assistant turn"),
        ("\n\nHuman: x\n\nAssistant: y", "\n\nHuman: x\n\nAssistant:", "rejected", "final Assistant turn is empty"),
        ("\n\nHuman: x\n\nAssistant: y", "\n\nHuman: z\n\nAssistant: y", "rejected", "differ"),
        ("no turns at all", "\n\nHuman: x\n\nAssistant: y", "chosen", "text before the first"),
        ("\n\nAssistant: y", "\n\nHuman: x\n\nAssistant: y", "chosen", "no Human turn"),
        (None, "\n\nHuman: x\n\nAssistant: y", "chosen", "missing"),
    ],
)
def test_hh_rlhf_malformed_rows(chosen, rejected, field, reason):
    good = rows("hh_rlhf_harmless.jsonl")
    data = [*good[:2], {"chosen": chosen, "rejected": rejected}, good[2]]
    with pytest.raises(InvalidRowError, match=reason) as err:
        from_hh_rlhf(Dataset.from_list(data))
    assert (err.value.row, err.value.field) == (2, field)
    dataset, report = from_hh_rlhf(Dataset.from_list(data), skip_invalid_rows=True)
    assert len(dataset) == 3 and report.num_skipped == 1 and report.skipped[0][:2] == (2, field)


# SEAS and messages


def test_seas_seed_pool(load):
    dataset, report = from_seas_seed_pool(load("seas.jsonl"))
    assert dataset.column_names == ["prompt", "category"] and len(dataset) == 6
    assert report.counts == {"seed": 6}
    pool = SeedPool(dataset, k=2)
    assert pool.categories == ["Goal_Hijacking", "Role_Play"]
    data = rows("seas.jsonl")
    data[4]["category"] = " "
    with pytest.raises(InvalidRowError, match="row 4, field 'category': empty"):
        from_seas_seed_pool(Dataset.from_list(data))
    dataset, report = from_seas_seed_pool(Dataset.from_list(data), skip_invalid_rows=True)
    assert len(dataset) == 5 and report.skipped == [(4, "category", "empty")]


def test_from_messages(load, llama3_tokenizer):
    dataset, report = from_messages(load("messages.jsonl"))
    assert dataset.column_names == ["messages"] and len(dataset) == 4
    assert report.num_benign == 4 and report.counts == {"benign": 4}
    assert_contract(dataset, llama3_tokenizer)

    data = rows("messages.jsonl")
    data[1]["messages"][0]["role"] = "narrator"
    data[2]["messages"] = data[2]["messages"][:1]  # a user turn and no answer
    with pytest.raises(InvalidRowError, match="row 1, field 'messages': message 0 has role 'narrator'"):
        from_messages(Dataset.from_list(data))
    dataset, report = from_messages(Dataset.from_list(data), skip_invalid_rows=True)
    assert [r[0] for r in report.skipped] == [1, 2] and {r[1] for r in report.skipped} == {"messages"}
    assert dataset["messages"] == [data[0]["messages"], data[3]["messages"]]


# The DeRTa mix


@pytest.fixture
def pairs():
    return Dataset.from_list(
        [
            {"prompt": f"how do i do bad thing {c}", "chosen": "sorry i can not", "rejected": f"sure {c}"}
            for c in "abcdefgh"
        ]
    )


@pytest.fixture
def benign():
    return Dataset.from_list([{"prompt": f"what is {c}", "chosen": f"{c} is a letter"} for c in "abcdefghijklmnop"])


def test_derta_mix_all_rows(pairs, benign, llama3_tokenizer):
    mix = build_derta_mix(pairs, benign)
    assert len(mix) == 24 and sum(mix["is_harmful"]) == 8
    assert mix.column_names == ["prompt", "chosen", "rejected", "is_harmful"]
    assert all((r is not None) == h for r, h in zip(mix["rejected"], mix["is_harmful"]))
    assert mix["is_harmful"][:8] != [True] * 8  # shuffled
    assert_contract(mix, llama3_tokenizer)


def test_derta_mix_ratio_and_determinism(pairs, benign):
    mix = build_derta_mix(pairs, benign, harmful_ratio=0.25, num_rows=12, seed=3)
    assert len(mix) == 12 and sum(mix["is_harmful"]) == 3
    assert mix.to_list() == build_derta_mix(pairs, benign, harmful_ratio=0.25, num_rows=12, seed=3).to_list()
    assert mix.to_list() != build_derta_mix(pairs, benign, harmful_ratio=0.25, num_rows=12, seed=4).to_list()
    # without num_rows: the largest mix at the ratio (8 harmful limit 16 rows, 16 helpful limit 32)
    mix = build_derta_mix(pairs, benign, harmful_ratio=0.5)
    assert len(mix) == 16 and sum(mix["is_harmful"]) == 8
    # num_rows alone keeps the inputs' ratio (8:16)
    mix = build_derta_mix(pairs, benign, num_rows=6)
    assert sum(mix["is_harmful"]) == 2
    with pytest.raises(ValueError, match="needs 10 harmful"):
        build_derta_mix(pairs, benign, harmful_ratio=0.5, num_rows=20)
    with pytest.raises(ValueError, match="harmful_ratio"):
        build_derta_mix(pairs, benign, harmful_ratio=1.5)


def test_derta_mix_of_builders(load, llama3_tokenizer):
    """hh-rlhf pairs (conversational) with `messages` rows; PKU pairs (text) with BeaverTails benign rows."""
    harmful, _ = from_hh_rlhf(load("hh_rlhf_harmless.jsonl"))
    helpful, _ = from_messages(load("messages.jsonl"))
    mix = build_derta_mix(harmful, helpful, seed=1)
    assert len(mix) == 7 and sum(mix["is_harmful"]) == 3
    assert set(mix.column_names) == {"prompt", "chosen", "rejected", "messages", "is_harmful"}
    assert_contract(mix, llama3_tokenizer)

    harmful, _ = from_pku_saferlhf(load("pku_saferlhf.jsonl"))  # 3 pairs and one benign (both-safe) row
    helpful, _ = from_beavertails(load("beavertails.jsonl"), only_safe="benign")
    mix = build_derta_mix(harmful, helpful)
    assert len(mix) == 7 and sum(mix["is_harmful"]) == 5
    assert_contract(mix, llama3_tokenizer)

    text_pairs, _ = from_pku_saferlhf(load("pku_saferlhf.jsonl"))
    conversational, _ = from_hh_rlhf(load("hh_rlhf_harmless.jsonl"))
    with pytest.raises(ValueError, match="different types"):
        build_derta_mix(text_pairs, conversational)
