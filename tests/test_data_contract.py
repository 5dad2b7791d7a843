"""The data contract: each bad row raises one `InvalidRowError` naming its row and field, or is skipped and counted."""

import pytest
from datasets import Dataset

from hf_safety import DeRTaConfig, InvalidRowError
from hf_safety.data import SkipReport, check_row, prepare_preference_dataset


def conv_row(task: str, harmful: bool = True) -> dict:
    return {
        "prompt": [{"role": "user", "content": f"how do i {task}"}],
        "chosen": [{"role": "assistant", "content": "Sorry , i can not help" if harmful else "sure , here is how"}],
        "rejected": [{"role": "assistant", "content": "first , break the side window"}] if harmful else None,
    }


def text_row(task: str, harmful: bool = True) -> dict:
    return {
        "prompt": f"how do i {task}",
        "chosen": " Sorry , i can not help" if harmful else " sure , here is how",
        "rejected": " first , break the side window" if harmful else None,
    }


TASKS = ["steal a car", "cook rice", "build a weapon", "plant a tree", "track a person secretly"]


def conv_rows() -> list[dict]:
    return [conv_row(task, harmful=i % 2 == 0) for i, task in enumerate(TASKS)]


def text_rows() -> list[dict]:
    return [text_row(task, harmful=i % 2 == 0) for i, task in enumerate(TASKS)]


def with_bad_row(rows: list[dict], index: int, **changes) -> list[dict]:
    rows = [dict(row) for row in rows]
    rows[index].update(changes)
    return rows


def assert_invalid_row(err: InvalidRowError, row: int, field: str) -> None:
    assert err.row == row
    assert err.field == field
    assert f"row {row}" in str(err)
    assert f"'{field}'" in str(err)
    assert "skip_invalid_rows=True" in str(err)


# Each case: (rows builder, index of the bad row, changes to it, field named in the error)
BAD_ROWS = {
    "conv-prompt-none": (conv_rows, 2, {"prompt": None}, "prompt"),
    "conv-prompt-empty-list": (conv_rows, 2, {"prompt": []}, "prompt"),
    "conv-prompt-blank-content": (conv_rows, 2, {"prompt": [{"role": "user", "content": "   "}]}, "prompt"),
    "conv-prompt-message-without-content": (conv_rows, 2, {"prompt": [{"role": "user"}]}, "prompt"),
    "conv-chosen-none": (conv_rows, 2, {"chosen": None}, "chosen"),
    "conv-chosen-empty-list": (conv_rows, 2, {"chosen": []}, "chosen"),
    "conv-chosen-empty-content": (conv_rows, 2, {"chosen": [{"role": "assistant", "content": ""}]}, "chosen"),
    "conv-chosen-message-without-content": (conv_rows, 2, {"chosen": [{"role": "assistant"}]}, "chosen"),
    "conv-rejected-message-without-content": (conv_rows, 2, {"rejected": [{"role": "assistant"}]}, "rejected"),
    "text-prompt-none": (text_rows, 2, {"prompt": None}, "prompt"),
    "text-prompt-empty": (text_rows, 2, {"prompt": ""}, "prompt"),
    "text-prompt-blank": (text_rows, 2, {"prompt": "   "}, "prompt"),
    "text-chosen-none": (text_rows, 2, {"chosen": None}, "chosen"),
    "text-chosen-empty": (text_rows, 2, {"chosen": ""}, "chosen"),
    "text-chosen-blank": (text_rows, 2, {"chosen": " \n "}, "chosen"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
@pytest.mark.parametrize("tok_name", ["llama3_tokenizer", "mistral_tokenizer"])
def test_bad_row_raises_one_error_naming_row_and_field(request, tok_name, case):
    tok = request.getfixturevalue(tok_name)
    rows_fn, index, changes, field = BAD_ROWS[case]
    rows = with_bad_row(rows_fn(), index, **changes)
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), tok)
    assert_invalid_row(excinfo.value, index, field)
    assert "more invalid rows" not in str(excinfo.value)  # just this one row


def test_prompt_longer_than_max_length(llama3_tokenizer):
    tok = llama3_tokenizer
    rows = conv_rows()
    # '<|begin_of_text|> <|start_header_id|> user <|end_header_id|> how do i X.. <|eot_id|> <|start_header_id|>
    # assistant <|end_header_id|>': 8 tokens + the words of the request
    prompt_lengths = [8 + len(row["prompt"][0]["content"].split()) for row in rows]
    assert prompt_lengths == [14, 13, 14, 14, 15]
    long_prompt = [{"role": "user", "content": "how do i " + " ".join(["a"] * 30)}]
    rows = with_bad_row(rows, 2, prompt=long_prompt)
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), tok, max_length=20)
    assert_invalid_row(excinfo.value, 2, "prompt")
    assert "max_length is 20" in str(excinfo.value)
    assert "prompt is 41 tokens" in str(excinfo.value)


def test_max_length_boundary_needs_one_token_of_room(llama3_tokenizer):
    rows = conv_rows()  # the longest prompt (row 4) is 15 tokens
    prepared, _ = prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer, max_length=16)
    assert prepared["row_index"] == [0, 1, 2, 3, 4]
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer, max_length=15)
    assert_invalid_row(excinfo.value, 4, "prompt")


def test_missing_prompt_column(llama3_tokenizer):
    rows = [{k: v for k, v in row.items() if k != "prompt"} for row in conv_rows()]
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer)
    assert_invalid_row(excinfo.value, 0, "prompt")
    assert "(4 more invalid rows)" in str(excinfo.value)


@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_non_string_column(llama3_tokenizer, field):
    # A column holds one Arrow type, so a column of ints makes every row invalid; the first one is named
    rows = [dict(row, **{field: 7 + i}) for i, row in enumerate(text_rows())]
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer)
    assert_invalid_row(excinfo.value, 0, field)
    assert "got int" in str(excinfo.value)
    assert "(4 more invalid rows)" in str(excinfo.value)


@pytest.mark.parametrize(
    "make_row, field, value, reason",
    [
        (text_row, "prompt", 5, "got int"),
        (text_row, "prompt", {"role": "user", "content": "hi"}, "got dict"),
        (text_row, "chosen", 5, "got int"),
        (text_row, "chosen", 1.5, "got float"),
        (text_row, "rejected", b"first", "got bytes"),
        (text_row, "chosen", [{"role": "assistant", "content": "sure"}], "needs a conversational `prompt`"),
        (conv_row, "rejected", ["first"], "message 0 is not a dict"),
        (conv_row, "chosen", [{"role": 1, "content": "sure"}], "message 0 is not a dict with a string 'role'"),
        (conv_row, "prompt", [{"role": "user", "content": 3}], "message 0 has no string 'content'"),
    ],
)
def test_check_row_non_string_field_at_row_2(make_row, field, value, reason):
    example = dict(make_row("cook rice"), **{field: value})
    with pytest.raises(InvalidRowError) as excinfo:
        check_row(example, 2)
    err = excinfo.value
    assert (err.row, err.field) == (2, field)
    assert str(err).startswith(f"row 2, field '{field}': ")
    assert reason in err.reason


def test_message_without_role(llama3_tokenizer):
    rows = with_bad_row(conv_rows(), 3, chosen=[{"content": "sure"}])
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer)
    assert_invalid_row(excinfo.value, 3, "chosen")
    assert "string 'role'" in str(excinfo.value)


def test_empty_rejected_marks_a_benign_row(llama3_tokenizer):
    tok = llama3_tokenizer
    benign = prepare_preference_dataset(Dataset.from_list([conv_row("cook rice", harmful=False)]), tok)[0][0]
    assert benign["rejected_ids"] == []
    for rejected in (None, [], [{"role": "assistant", "content": ""}], [{"role": "assistant", "content": "  "}]):
        row = dict(conv_row("cook rice", harmful=False), rejected=rejected)
        assert check_row(row, 0).rejected is None
        prepared, _ = prepare_preference_dataset(Dataset.from_list([row]), tok)
        assert prepared[0] == benign
    for rejected in (None, "", "   "):
        row = dict(text_row("cook rice", harmful=False), rejected=rejected)
        assert check_row(row, 0).rejected is None
        assert prepare_preference_dataset(Dataset.from_list([row]), tok)[0][0]["rejected_ids"] == []


# --------------------------------------------------------------------------------------------------------------------
# skip_invalid_rows
# --------------------------------------------------------------------------------------------------------------------


def test_skip_invalid_rows_skips_counts_and_keeps_the_rest(llama3_tokenizer):
    tok = llama3_tokenizer
    good = conv_rows() + [conv_row("grow tomatoes", harmful=False), conv_row("steal a car")]
    rows = with_bad_row(good, 1, chosen=None)
    rows = with_bad_row(rows, 3, prompt=[])
    rows = with_bad_row(rows, 6, chosen=[{"role": "assistant", "content": " "}])

    # Without skipping: the first bad row is named, and the others counted
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), tok)
    assert_invalid_row(excinfo.value, 1, "chosen")
    assert "(2 more invalid rows)" in str(excinfo.value)

    prepared, report = prepare_preference_dataset(
        Dataset.from_list(rows), tok, skip_invalid_rows=True, dataset_name="eval"
    )
    assert isinstance(report, SkipReport)
    assert report.dataset_name == "eval"
    assert report.num_rows == 7
    assert report.num_skipped == 3
    assert report.by_field() == {"chosen": 2, "prompt": 1}
    assert [(row, field) for row, field, _ in report.skipped] == [(1, "chosen"), (3, "prompt"), (6, "chosen")]
    assert all(reason == "missing or empty" for _, _, reason in report.skipped)
    assert str(report).startswith("eval dataset: skipped 3 of 7 rows (by field: {'chosen': 2, 'prompt': 1}): row 1")

    # The remaining rows are intact: the same as preparing each good row alone
    assert prepared["row_index"] == [0, 2, 4, 5]
    assert prepared.column_names == ["row_index", "prompt_ids", "chosen_ids", "rejected_ids", "chosen_labels"]
    for row in prepared:
        alone, _ = prepare_preference_dataset(Dataset.from_list([good[row["row_index"]]]), tok)
        assert {k: v for k, v in row.items() if k != "row_index"} == {
            k: v for k, v in alone[0].items() if k != "row_index"
        }
    assert [bool(row["rejected_ids"]) for row in prepared] == [True, True, True, False]


def test_skip_report_when_all_rows_are_valid(llama3_tokenizer):
    prepared, report = prepare_preference_dataset(
        Dataset.from_list(conv_rows()), llama3_tokenizer, skip_invalid_rows=True
    )
    assert report.num_skipped == 0 and report.skipped == [] and report.by_field() == {}
    assert str(report) == "train dataset: all 5 rows valid"
    assert prepared["row_index"] == [0, 1, 2, 3, 4]


def test_skip_report_lists_five_then_counts_the_rest(llama3_tokenizer):
    rows = conv_rows() * 2 + [conv_row("cook rice", harmful=False)]
    rows = [dict(row, chosen=None) if i < 8 else row for i, row in enumerate(rows)]
    prepared, report = prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer, skip_invalid_rows=True)
    assert prepared["row_index"] == [8, 9, 10]
    assert report.num_skipped == 8 and report.by_field() == {"chosen": 8}
    assert str(report).endswith("row 4, field 'chosen': missing or empty (+3 more)")


def test_all_rows_invalid_with_skip_raises(llama3_tokenizer):
    rows = [dict(row, chosen="") for row in text_rows()]
    with pytest.raises(ValueError, match="Every row of the train dataset is invalid") as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer, skip_invalid_rows=True)
    assert not isinstance(excinfo.value, InvalidRowError)
    assert "skipped 5 of 5 rows" in str(excinfo.value)


@pytest.mark.parametrize("skip", [False, True])
def test_empty_dataset_raises(llama3_tokenizer, skip):
    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(ValueError, match="The train dataset is empty"):
        prepare_preference_dataset(empty, llama3_tokenizer, skip_invalid_rows=skip)


# --------------------------------------------------------------------------------------------------------------------
# `messages` rows
# --------------------------------------------------------------------------------------------------------------------


def messages(user: str, assistant: str, system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


@pytest.mark.parametrize("tok_name", ["llama3_tokenizer", "mistral_tokenizer"])
def test_messages_rows_are_trained_as_sft_trains_them(request, tok_name):
    """A `messages` row is one SFT sequence: the whole conversation, every token labelled (SFTTrainer's default for
    conversational language-modelling data), several assistant turns included."""
    tok = request.getfixturevalue(tok_name)
    conversation = messages("hi", "hello there") + [
        {"role": "user", "content": "how do i cook rice"},
        {"role": "assistant", "content": "sure , here is how"},
    ]
    rows = [{"messages": messages("how do i cook rice", "sure , here is how")}, {"messages": conversation}]
    prepared, report = prepare_preference_dataset(Dataset.from_list(rows), tok)
    assert report.num_skipped == 0 and (report.num_harmful, report.num_benign) == (0, 2)
    assert prepared["row_index"] == [0, 1] and prepared["rejected_ids"] == [[], []]
    for row, prepared_row in zip(rows, prepared):
        whole = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert prepared_row["prompt_ids"] == [] and prepared_row["chosen_ids"] == list(whole)
        assert prepared_row["chosen_labels"] == list(whole)


def test_messages_row_keeps_the_whole_conversation():
    conversation = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how do i cook rice"},
        {"role": "assistant", "content": "sure , here is how"},
    ]
    row = check_row({"messages": conversation}, 0)
    assert row.messages == conversation  # trained whole, as SFTTrainer trains `messages`
    assert row.prompt == conversation[:4] and row.chosen == conversation[4:]  # the last exchange, e.g. for evaluation
    assert row.rejected is None and not row.is_harmful and row.is_conversational


@pytest.mark.parametrize(
    "bad, reason",
    [
        (None, "missing or empty"),
        ([], "missing or empty"),
        ([{"role": "user", "content": "hi"}], "needs a user turn followed by an assistant message"),
        ([{"role": "assistant", "content": "hi"}], "needs a user turn followed by an assistant message"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}],
            "last assistant message is empty",
        ),
        ([{"role": "user", "content": "hi"}, {"role": "assistant"}], "message 1 has no string 'content'"),
    ],
)
def test_bad_messages_row_names_messages(llama3_tokenizer, bad, reason):
    rows = [{"messages": messages("hi", "hello there")} for _ in range(4)]
    rows[2] = {"messages": bad}
    with pytest.raises(InvalidRowError) as excinfo:
        prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer)
    assert_invalid_row(excinfo.value, 2, "messages")
    assert reason in excinfo.value.reason


# --------------------------------------------------------------------------------------------------------------------
# Column types that Arrow infers from the first rows
# --------------------------------------------------------------------------------------------------------------------


def test_harmful_row_after_a_thousand_benign_rows(llama3_tokenizer):
    """`rejected_ids` of the first 1000-row writer batch are all empty: the column must still take ids after it."""
    rows = [text_row("cook rice", harmful=False)] * 1001 + [text_row("steal a car")]
    prepared, _ = prepare_preference_dataset(Dataset.from_list(rows), llama3_tokenizer, with_word_starts=True)
    assert len(prepared) == 1002
    last = prepared[1001]
    assert llama3_tokenizer.convert_ids_to_tokens(last["rejected_ids"]) == [
        "first", ",", "break", "the", "side", "window"
    ]  # fmt: skip
    assert last["rejected_word_starts"]
    assert prepared[0]["rejected_ids"] == [] and prepared[0]["rejected_word_starts"] == []


# --------------------------------------------------------------------------------------------------------------------
# DeRTaConfig
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("refusal_text", ["", "   "])
def test_config_empty_refusal_text_raises(tmp_path, cpu_args, refusal_text):
    with pytest.raises(ValueError, match="'refusal_text'"):
        DeRTaConfig(output_dir=str(tmp_path), refusal_text=refusal_text, **cpu_args)


def test_config_default_refusal_text(tmp_path, cpu_args):
    assert DeRTaConfig(output_dir=str(tmp_path), **cpu_args).refusal_text == "Sorry"
