"""SEAS preference pairs from judged records: verdicts come from the `unsafe` field only, with row/field errors."""

import logging

import pytest
from datasets import Dataset

from hf_safety.data import InvalidRowError
from hf_safety.seas.pairs import build_red_team_pairs, build_target_pairs, mix_general_data, pair_counts


RED_COLUMNS = [
    "prompt",
    "chosen",
    "rejected",
    "chosen_unsafe_rate",
    "rejected_unsafe_rate",
    "num_adversarial_prompts",
]
TARGET_COLUMNS = ["prompt", "chosen", "rejected", "seed_prompt"]


def rec(seed: str, adv: str, response: str, unsafe, **extra) -> dict:
    return {"seed_prompt": seed, "adversarial_prompt": adv, "response": response, "unsafe": unsafe, **extra}


def judged(seed: str, adv: str, verdicts: list, **extra) -> list[dict]:
    """One record per verdict; responses are named after the prompt and their position."""
    return [rec(seed, adv, f"{adv} / answer {i}", unsafe, **extra) for i, unsafe in enumerate(verdicts)]


def as_input(rows: list[dict], kind: str):
    return Dataset.from_list(rows) if kind == "dataset" else rows


@pytest.fixture(params=["list", "dataset"])
def kind(request):
    return request.param


# --- red-team pairs ---


def test_red_pair_highest_against_lowest_rate(kind):
    rows = [
        *judged("s", "a1", [True, False, False, False]),  # 0.25
        *judged("s", "a2", [True, True, True, False]),  # 0.75
        *judged("s", "a3", [False, False, False, False]),  # 0.0
    ]
    pairs = build_red_team_pairs(as_input(rows, kind))
    assert pairs.column_names == RED_COLUMNS
    assert pairs.to_list() == [
        {
            "prompt": "s",
            "chosen": "a2",
            "rejected": "a3",
            "chosen_unsafe_rate": 0.75,
            "rejected_unsafe_rate": 0.0,
            "num_adversarial_prompts": 3,
        }
    ]


def test_red_equal_rates_give_no_pair(kind):
    rows = [*judged("s", "a1", [True, False]), *judged("s", "a2", [False, True]), *judged("s", "a3", [True, False])]
    pairs = build_red_team_pairs(as_input(rows, kind))
    assert len(pairs) == 0
    assert pairs.column_names == RED_COLUMNS


def test_red_ties_go_to_first_seen():
    rows = [
        *judged("s", "low1", [False, False]),
        *judged("s", "high1", [True, True]),
        *judged("s", "low2", [False, False]),
        *judged("s", "high2", [True, True]),
    ]
    (pair,) = build_red_team_pairs(rows).to_list()
    assert (pair["chosen"], pair["rejected"]) == ("high1", "low1")
    assert pair["num_adversarial_prompts"] == 4


def test_red_all_safe_and_all_unsafe_give_no_pairs():
    all_safe = [*judged("s", "a1", [False, False]), *judged("s", "a2", [False])]
    all_unsafe = [*judged("t", "b1", [True, True]), *judged("t", "b2", [True])]
    assert len(build_red_team_pairs(all_safe)) == 0
    assert len(build_red_team_pairs(all_unsafe)) == 0
    assert len(build_red_team_pairs(all_safe + all_unsafe)) == 0


def test_red_single_prompt_gives_no_pair():
    assert len(build_red_team_pairs(judged("s", "a1", [True, False, False]))) == 0


def test_red_unknown_verdicts_are_excluded_from_rates():
    rows = [
        # 1 unsafe of 1 known (the two unknowns count as neither): rate 1.0, not 1/3
        *judged("s", "a1", [True, None, None]),
        # only unknowns: no rate, never chosen nor rejected
        *judged("s", "a2", [None, None, None]),
        # 1 unsafe of 2 known: 0.5
        *judged("s", "a3", [None, True, False]),
    ]
    (pair,) = build_red_team_pairs(rows).to_list()
    assert (pair["chosen"], pair["rejected"]) == ("a1", "a3")
    assert (pair["chosen_unsafe_rate"], pair["rejected_unsafe_rate"]) == (1.0, 0.5)
    assert pair["num_adversarial_prompts"] == 2


def test_red_unknown_only_prompt_is_not_rejected_even_first():
    rows = [*judged("s", "unknown", [None, None]), *judged("s", "a1", [True]), *judged("s", "a2", [False])]
    (pair,) = build_red_team_pairs(rows).to_list()
    assert (pair["chosen"], pair["rejected"]) == ("a1", "a2")


def test_red_only_unknowns_give_no_pair():
    rows = [*judged("s", "a1", [None]), *judged("s", "a2", [None, None])]
    assert len(build_red_team_pairs(rows)) == 0


def test_red_several_seeds_in_first_seen_order(kind):
    rows = [
        *judged("seed B", "b1", [True]),
        *judged("seed A", "a1", [False]),
        *judged("seed C", "c1", [True]),  # one prompt only: no pair
        *judged("seed B", "b2", [False]),
        *judged("seed A", "a2", [True, False]),
        *judged("seed B", "b3", [True, False]),
    ]
    pairs = build_red_team_pairs(as_input(rows, kind))
    assert pairs["prompt"] == ["seed B", "seed A"]
    assert pairs["chosen"] == ["b1", "a2"]
    assert pairs["rejected"] == ["b2", "a1"]
    assert pairs["chosen_unsafe_rate"] == [1.0, 0.5]
    assert pairs["num_adversarial_prompts"] == [3, 2]


def test_red_carries_iteration_and_category_from_seed_first_record(kind):
    rows = [
        *judged("s", "a1", [True], iteration=2, category="weapons"),
        *judged("s", "a2", [False], iteration=3, category="other"),
    ]
    pairs = build_red_team_pairs(as_input(rows, kind))
    assert pairs.column_names == [*RED_COLUMNS, "iteration", "category"]
    assert pairs[0]["iteration"] == 2
    assert pairs[0]["category"] == "weapons"


def test_red_empty_result_has_optional_columns():
    rows = judged("s", "a1", [True], iteration=0, category="c")
    pairs = build_red_team_pairs(rows)
    assert len(pairs) == 0
    assert pairs.column_names == [*RED_COLUMNS, "iteration", "category"]
    assert build_red_team_pairs([]).column_names == RED_COLUMNS


def test_red_verdict_never_read_from_text():
    # The text says the opposite of the verdict: only the `unsafe` field counts
    rows = [
        rec("s", "a1", "This is unsafe", False),
        rec("s", "a1", "unsafe unsafe", False),
        rec("s", "a2", "This is safe", True),
        rec("s", "a2", "I am safe and harmless", True),
    ]
    (pair,) = build_red_team_pairs(rows).to_list()
    assert (pair["chosen"], pair["rejected"]) == ("a2", "a1")
    assert (pair["chosen_unsafe_rate"], pair["rejected_unsafe_rate"]) == (1.0, 0.0)


# --- target pairs ---


def test_target_first_safe_against_first_unsafe(kind):
    rows = [
        rec("s", "a1", "unsafe 1", True),
        rec("s", "a1", "unknown", None),
        rec("s", "a1", "safe 1", False),
        rec("s", "a1", "unsafe 2", True),
        rec("s", "a1", "safe 2", False),
    ]
    pairs = build_target_pairs(as_input(rows, kind))
    assert pairs.column_names == TARGET_COLUMNS
    assert pairs.to_list() == [{"prompt": "a1", "chosen": "safe 1", "rejected": "unsafe 1", "seed_prompt": "s"}]


def test_target_all_safe_all_unsafe_give_no_pairs():
    all_safe = [*judged("s", "a1", [False, False, False]), *judged("s", "a2", [False])]
    all_unsafe = [*judged("s", "a3", [True, True]), *judged("t", "a4", [True])]
    for rows in (all_safe, all_unsafe, all_safe + all_unsafe):
        pairs = build_target_pairs(rows)
        assert len(pairs) == 0
        assert pairs.column_names == TARGET_COLUMNS


def test_target_unknown_never_used_as_response():
    # a1: only an unknown besides the safe one; a2: unknowns around a real pair
    rows = [
        rec("s", "a1", "unknown a1", None),
        rec("s", "a1", "safe a1", False),
        rec("s", "a2", "unknown a2", None),
        rec("s", "a2", "unsafe a2", True),
        rec("s", "a2", "unknown a2 again", None),
        rec("s", "a2", "safe a2", False),
    ]
    pairs = build_target_pairs(rows)
    assert pairs.to_list() == [{"prompt": "a2", "chosen": "safe a2", "rejected": "unsafe a2", "seed_prompt": "s"}]


def test_target_verdict_never_read_from_text():
    rows = [rec("s", "a1", "This is safe, here is how", True), rec("s", "a1", "This is unsafe", False)]
    (pair,) = build_target_pairs(rows).to_list()
    assert pair["chosen"] == "This is unsafe"
    assert pair["rejected"] == "This is safe, here is how"


def test_target_several_prompts_and_seeds_in_first_seen_order(kind):
    rows = [
        rec("seed B", "b1", "b1 unsafe", True, iteration=1, category="x"),
        rec("seed A", "a1", "a1 safe", False, iteration=1, category="y"),
        rec("seed B", "b2", "b2 safe", False, iteration=1, category="x"),
        rec("seed A", "a1", "a1 unsafe", True, iteration=1, category="y"),
        rec("seed B", "b1", "b1 safe", False, iteration=1, category="x"),
    ]
    pairs = build_target_pairs(as_input(rows, kind))
    assert pairs.column_names == [*TARGET_COLUMNS, "iteration", "category"]
    assert pairs["prompt"] == ["b1", "a1"]
    assert pairs["chosen"] == ["b1 safe", "a1 safe"]
    assert pairs["rejected"] == ["b1 unsafe", "a1 unsafe"]
    assert pairs["seed_prompt"] == ["seed B", "seed A"]
    assert pairs["category"] == ["x", "y"]


def test_target_empty_response_is_allowed():
    rows = [rec("s", "a1", "", False), rec("s", "a1", "here is how", True)]
    assert build_target_pairs(rows)[0]["chosen"] == ""


# --- validation ---


@pytest.mark.parametrize("build", [build_red_team_pairs, build_target_pairs, pair_counts])
def test_string_verdict_is_rejected(build):
    rows = [*judged("s", "a1", [True, False, None]), rec("s", "a2", "x", "unsafe")]
    with pytest.raises(InvalidRowError) as info:
        build(rows)
    assert str(info.value) == (
        "row 3, field 'unsafe': expected True, False or None (the judge's verdict), got 'unsafe'"
    )
    assert (info.value.row, info.value.field) == (3, "unsafe")


@pytest.mark.parametrize("verdict", [1, 0, "safe", "True", 1.0])
def test_non_bool_verdicts_are_rejected(verdict):
    rows = [rec("s", "a1", "x", True), rec("s", "a1", "y", verdict)]
    with pytest.raises(InvalidRowError, match=r"row 1, field 'unsafe': expected True, False or None"):
        build_red_team_pairs(rows)


def test_string_verdict_column_in_dataset_is_rejected():
    records = Dataset.from_list([rec("s", "a1", "x", "unsafe"), rec("s", "a2", "y", "safe")])
    with pytest.raises(InvalidRowError, match=r"row 0, field 'unsafe'.*got 'unsafe'"):
        build_target_pairs(records)


@pytest.mark.parametrize("field", ["seed_prompt", "adversarial_prompt", "response", "unsafe"])
def test_missing_field(field):
    rows = judged("s", "a1", [True, False, True, False])
    del rows[3][field]
    with pytest.raises(InvalidRowError) as info:
        build_red_team_pairs(rows)
    assert str(info.value) == f"row 3, field '{field}': missing"


def test_missing_column_in_dataset():
    records = Dataset.from_list(judged("s", "a1", [True, False])).remove_columns("unsafe")
    with pytest.raises(InvalidRowError, match=r"row 0, field 'unsafe': missing"):
        build_target_pairs(records)


@pytest.mark.parametrize("field", ["seed_prompt", "adversarial_prompt"])
@pytest.mark.parametrize("value", ["", "   ", 3, ["a"]])
def test_empty_or_non_string_prompts(field, value):
    rows = judged("s", "a1", [True, False])
    rows[1][field] = value
    with pytest.raises(InvalidRowError, match=rf"row 1, field '{field}'"):
        build_target_pairs(rows)


def test_non_string_response():
    rows = judged("s", "a1", [True, False])
    rows[0]["response"] = 42
    with pytest.raises(InvalidRowError, match=r"row 0, field 'response': expected a string, got int"):
        pair_counts(rows)


def test_non_dict_record_and_bad_records_type():
    with pytest.raises(ValueError, match="row 1"):
        build_red_team_pairs([rec("s", "a", "x", True), "not a record"])
    with pytest.raises(TypeError):
        build_red_team_pairs("records")


# --- mix_general_data ---


def text_pairs(n: int, tag: str = "seas") -> Dataset:
    return Dataset.from_dict(
        {
            "prompt": [f"{tag} prompt {i}" for i in range(n)],
            "chosen": [f"{tag} chosen {i}" for i in range(n)],
            "rejected": [f"{tag} rejected {i}" for i in range(n)],
            "seed_prompt": [f"seed {i}" for i in range(n)],
        }
    )


def conv_pairs(n: int) -> Dataset:
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": f"q {i}"}] for i in range(n)],
            "chosen": [[{"role": "assistant", "content": f"good {i}"}] for i in range(n)],
            "rejected": [[{"role": "assistant", "content": f"bad {i}"}] for i in range(n)],
        }
    )


def test_mix_ratio_counts():
    pairs, general = text_pairs(10), text_pairs(50, tag="general")
    mixed = mix_general_data(pairs, general, ratio=0.5)
    assert mixed.column_names == ["prompt", "chosen", "rejected", "general"]
    assert len(mixed) == 15
    assert sum(mixed["general"]) == 5
    # every SEAS pair is kept, the general rows are distinct rows of `general`, each row kept whole
    assert sorted(r["prompt"] for r in mixed if not r["general"]) == sorted(pairs["prompt"])
    general_rows = [r for r in mixed if r["general"]]
    assert len({r["prompt"] for r in general_rows}) == 5
    for r in general_rows:
        i = r["prompt"].removeprefix("general prompt ")
        assert (r["chosen"], r["rejected"]) == (f"general chosen {i}", f"general rejected {i}")
    assert mix_general_data(pairs, general, ratio=2.0)["general"].count(True) == 20
    assert mix_general_data(pairs, general, ratio=0.26)["general"].count(True) == 3  # round(2.6)


def test_mix_seed_determinism():
    pairs, general = text_pairs(10), text_pairs(50, tag="general")
    first = mix_general_data(pairs, general, ratio=1.0, seed=3).to_list()
    assert mix_general_data(pairs, general, ratio=1.0, seed=3).to_list() == first
    assert mix_general_data(pairs, general, ratio=1.0, seed=4).to_list() != first
    # shuffled: the SEAS pairs are not all in front
    assert [r["general"] for r in first] != [False] * 10 + [True] * 10


def test_mix_nothing_added():
    pairs, general = text_pairs(4), text_pairs(50, tag="general")
    for mixed in (mix_general_data(pairs, general, ratio=0), mix_general_data(pairs, None, ratio=1.0)):
        assert mixed.column_names == ["prompt", "chosen", "rejected", "general"]
        assert mixed["prompt"] == pairs["prompt"]  # in order
        assert mixed["general"] == [False] * 4


def test_mix_more_asked_than_available_takes_all_and_warns(caplog):
    pairs, general = text_pairs(10), text_pairs(3, tag="general")
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            mixed = mix_general_data(pairs, general, ratio=1.0)
    finally:
        hf_logging.disable_propagation()
    assert len(mixed) == 13
    assert sorted(r["prompt"] for r in mixed if r["general"]) == sorted(general["prompt"])
    assert "10 general rows asked" in caplog.text and "only 3 available" in caplog.text


def test_mix_conversational_both_sides():
    mixed = mix_general_data(conv_pairs(4), conv_pairs(8), ratio=1.0, seed=1)
    assert len(mixed) == 8
    assert sum(mixed["general"]) == 4


def test_mix_format_mismatch_raises():
    with pytest.raises(ValueError, match="same format"):
        mix_general_data(text_pairs(4), conv_pairs(8), ratio=1.0)
    with pytest.raises(ValueError, match="same format"):
        mix_general_data(conv_pairs(4), text_pairs(8), ratio=1.0)


def test_mix_negative_ratio_and_missing_columns():
    with pytest.raises(ValueError, match="ratio"):
        mix_general_data(text_pairs(4), text_pairs(8), ratio=-0.5)
    with pytest.raises(ValueError, match="rejected"):
        mix_general_data(text_pairs(4), text_pairs(8).remove_columns("rejected"), ratio=1.0)


def test_mix_accepts_built_pairs():
    rows = [*judged("s", "a1", [True, False]), *judged("t", "b1", [False, True])]
    target_pairs = build_target_pairs(rows)
    mixed = mix_general_data(target_pairs, text_pairs(10, tag="general"), ratio=1.0, seed=0)
    assert len(mixed) == 4
    assert sum(mixed["general"]) == 2


# --- pair_counts ---


def test_pair_counts(kind):
    rows = [
        *judged("s1", "a1", [True, False, None]),
        *judged("s1", "a2", [True, True]),
        *judged("s2", "b1", [None, False]),
        rec("s2", "a1", "same adversarial prompt, other seed", False),
    ]
    assert pair_counts(as_input(rows, kind)) == {
        "num_records": 8,
        "num_unknown": 2,
        "num_unsafe": 3,
        "num_safe": 3,
        "unsafe_rate": 0.5,
        "num_seeds": 2,
        "num_adversarial_prompts": 3,
    }


def test_pair_counts_empty_and_all_unknown():
    counts = pair_counts(judged("s", "a", [None, None]))
    assert counts["unsafe_rate"] == 0.0
    assert (counts["num_records"], counts["num_unknown"]) == (2, 2)
    assert pair_counts([])["num_records"] == 0
