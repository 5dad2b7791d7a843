"""DeRTaTrainer as a drop-in for SFTTrainer: every benign data format labelled as SFTTrainer labels it, the fields
SFTTrainer honours honoured, streaming, clear errors; and the safety of the data path (the RTO target as the data
really write it, a real word start, loud warnings, truncation counted, counters across resume, no token on disk)."""

import json

import pytest
from datasets import Dataset, IterableDataset
from testing_utils import toy_rows
from trl import SFTConfig, SFTTrainer

from hf_safety import DeRTaConfig, DeRTaTrainer
from hf_safety.data import EmptyDatasetError, refusal_token_id
from hf_safety.toy import build_tokenizer, tiny_model


OFF = dict(harmful_prefix=False, rto=False)
TEMPLATE_WITH_GENERATION = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|eot_id|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def chat(*turns):
    return [{"role": role, "content": text} for role, text in zip(["user", "assistant"] * 3, turns)]


@pytest.fixture(scope="module")
def tok(corpus):
    tokenizer = build_tokenizer(corpus, chat_format="llama3", model="word")
    tokenizer.chat_template = TEMPLATE_WITH_GENERATION
    return tokenizer


def build(trainer_cls, config_cls, tok, data, out, cpu_args, formatting_func=None, **config):
    kwargs = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=2, logging_steps=1, **cpu_args)
    if trainer_cls is DeRTaTrainer:
        config = {**OFF, **config}
    return trainer_cls(
        model=tiny_model(tok),
        args=config_cls(**kwargs, **config),
        train_dataset=data,
        processing_class=tok,
        formatting_func=formatting_func,
    )


def sequences(trainer):
    """(input_ids, labels) of every training row, as the trainer's collator builds them, padding removed."""
    out = []
    for row in trainer.train_dataset:
        batch = trainer.data_collator([row])
        n = int(batch["attention_mask"].sum())
        out.append((batch["input_ids"][0, :n].tolist(), batch["labels"][0, :n].tolist()))
    return out


FORMATS = {
    "text": ([{"text": "how do i cook rice sure , here is how"}, {"text": "hello there"}], {}),
    "prompt_completion_text": (
        [{"prompt": "how do i cook rice", "completion": " sure , here is how"}] * 2,
        {},
    ),
    "prompt_completion_text_full_loss": (
        [{"prompt": "how do i cook rice", "completion": " sure , here is how"}] * 2,
        {"completion_only_loss": False},
    ),
    "prompt_completion_chat": (
        [{"prompt": chat("how do i cook rice"), "completion": [{"role": "assistant", "content": "sure , here"}]}] * 2,
        {},
    ),
    "messages_multi_turn": ([{"messages": chat("hi", "hello there", "how do i cook rice", "sure , here is how")}], {}),
    "messages_assistant_only": (
        [{"messages": chat("hi", "hello there", "how do i cook rice", "sure , here is how")}],
        {"assistant_only_loss": True},
    ),
    "sharegpt": (
        [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there"}]}] * 2,
        {},
    ),
    "pretokenized": ([{"input_ids": [5, 6, 7, 8]}, {"input_ids": [9, 10, 11]}], {}),
    "pretokenized_labels": ([{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}] * 2, {}),
    "pretokenized_completion_mask": ([{"input_ids": [5, 6, 7, 8], "completion_mask": [0, 0, 1, 1]}] * 2, {}),
    "truncation_keep_end": (
        [{"messages": chat("hi", "hello there", "how do i cook rice", "sure , here is how")}],
        {"max_length": 12, "truncation_mode": "keep_end"},
    ),
    "tools_and_template_kwargs": (
        [{"messages": chat("hi", "hello there"), "tools": json.dumps([]), "chat_template_kwargs": {"x": 1}}] * 2,
        {},
    ),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_benign_formats_are_labelled_exactly_as_sft_trainer_labels_them(name, tok, tmp_path, cpu_args):
    rows, config = FORMATS[name]
    data = Dataset.from_list(rows)
    sft = build(SFTTrainer, SFTConfig, tok, data, tmp_path / "sft", cpu_args, **config)
    derta = build(DeRTaTrainer, DeRTaConfig, tok, data, tmp_path / "derta", cpu_args, **config)
    expected = sequences(sft)
    assert sequences(derta) == expected
    assert any(label != -100 for _, labels in expected for label in labels)
    if name == "messages_assistant_only":  # the user turns are not trained, both assistant turns are
        ids, labels = expected[0]
        trained = tok.decode([t for t, label in zip(ids, labels) if label != -100])
        assert "hello there" in trained and "sure , here is how" in trained and "cook rice" not in trained


def test_formatting_func_and_losses_match_sft(tok, tmp_path, cpu_args):
    data = Dataset.from_list([{"q": "how do i cook rice", "a": "sure , here is how"}] * 4)

    def fmt(example):
        return f"{example['q']} {example['a']}"

    common = dict(learning_rate=1e-2)
    for extra in ({}, {"label_smoothing_factor": 0.2}, {"loss_type": "dft"}):
        sft = build(SFTTrainer, SFTConfig, tok, data, tmp_path / "sft", cpu_args, fmt, **common, **extra)
        derta = build(DeRTaTrainer, DeRTaConfig, tok, data, tmp_path / "derta", cpu_args, fmt, **common, **extra)
        assert sequences(derta) == sequences(sft)
        sft.train()
        derta.train()
        sft_losses = [e["loss"] for e in sft.state.log_history if "loss" in e]
        derta_losses = [e["loss"] for e in derta.state.log_history if "loss" in e]
        assert derta_losses == pytest.approx(sft_losses, abs=1e-5), extra
    plain = build(DeRTaTrainer, DeRTaConfig, tok, data, tmp_path / "p", cpu_args, fmt, **common)
    plain.train()
    assert [e["loss"] for e in plain.state.log_history if "loss" in e] != pytest.approx(derta_losses, abs=1e-5)


def test_tools_and_chat_template_kwargs_change_preference_rows(corpus, tmp_path, cpu_args):
    tokenizer = build_tokenizer([*corpus, "tools: calculator loud"], chat_format="llama3", model="word")
    tokenizer.chat_template = (
        "{{ bos_token }}{% if tools %}tools: {{ tools | map(attribute='name') | join(' ') }}{% endif %}"
        "{% if loud %}loud{% endif %}"
        "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
        "{{ message['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    base = {"prompt": chat("how do i cook rice"), "chosen": chat("", "sure , here is how")[1:], "rejected": None}
    base = {**base, "tools": None, "chat_template_kwargs": None}
    rows = [base, {**base, "tools": [{"name": "calculator"}]}, {**base, "chat_template_kwargs": {"loud": True}}]
    trainer = DeRTaTrainer(
        model=tiny_model(tokenizer),
        args=DeRTaConfig(output_dir=str(tmp_path), **cpu_args),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    prompts = [tokenizer.decode(r["prompt_ids"]) for r in trainer.train_dataset]
    assert "tools" not in prompts[0] and "loud" not in prompts[0]
    assert "tools: calculator" in prompts[1] and "loud" in prompts[2]


def test_streaming_train_and_eval(tok, tmp_path, cpu_args):
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in toy_rows()]
    stream = IterableDataset.from_generator(lambda: iter(rows))
    trainer = DeRTaTrainer(
        model=tiny_model(tok),
        args=DeRTaConfig(
            output_dir=str(tmp_path),
            max_steps=3,
            per_device_train_batch_size=4,
            logging_steps=1,
            eval_strategy="steps",
            eval_steps=3,
            per_device_eval_batch_size=4,
            **cpu_args,
        ),
        train_dataset=stream,
        eval_dataset=IterableDataset.from_generator(lambda: iter(rows[:8])),
        processing_class=tok,
    )
    trainer.train()
    logs = trainer.state.log_history
    assert [e["step"] for e in logs if "loss" in e] == [1, 2, 3] and any("eval_loss" in e for e in logs)
    assert [e for e in logs if "loss" in e][-1]["derta/num_rto_sequences"] > 0

    # Rows of a stream are checked as they come, with the same row/field errors
    bad = rows[:3] + [{**rows[3], "chosen": ""}]
    # (the first rows are read at init)
    with pytest.raises(ValueError, match=r"row 3, field 'chosen': missing or empty"):
        DeRTaTrainer(
            model=tiny_model(tok),
            args=DeRTaConfig(output_dir=str(tmp_path / "bad"), max_steps=2, **cpu_args),
            train_dataset=IterableDataset.from_generator(lambda: iter(bad)),
            processing_class=tok,
        )


def test_empty_and_transformed_datasets_are_clear_errors(tok, tmp_path, cpu_args):
    args = DeRTaConfig(output_dir=str(tmp_path), **cpu_args)
    with pytest.raises(EmptyDatasetError, match="train dataset is empty"):
        DeRTaTrainer(
            model=tiny_model(tok), args=args, train_dataset=Dataset.from_dict({"prompt": []}), processing_class=tok
        )
    with pytest.raises(EmptyDatasetError, match="train dataset is empty"):
        DeRTaTrainer(
            model=tiny_model(tok),
            args=args,
            train_dataset=IterableDataset.from_generator(lambda: iter([])),
            processing_class=tok,
        )
    data = Dataset.from_list([{"text": "hello there"}] * 2).with_transform(lambda batch: batch)
    with pytest.raises(ValueError, match=r"with_transform\(\)"):
        DeRTaTrainer(model=tiny_model(tok), args=args, train_dataset=data, processing_class=tok)
    with pytest.raises(ValueError, match="'packing'.*padding_free=True"):
        DeRTaConfig(output_dir=str(tmp_path), packing=True, **cpu_args)
    with pytest.raises(ValueError, match="'nll' or 'dft'"):
        DeRTaConfig(output_dir=str(tmp_path), loss_type="chunked_nll_x", **cpu_args)


def test_prompt_too_long_is_named_never_dropped(tok, tmp_path, cpu_args):
    data = Dataset.from_list(
        [{"messages": chat("hi", "hello there")}] * 2 + [{"messages": chat("how do i cook rice " * 4, "sure")}]
    )
    args = DeRTaConfig(output_dir=str(tmp_path), max_length=12, assistant_only_loss=True, **cpu_args)
    with pytest.raises(ValueError, match=r"row 2, field 'messages': no trained token left within max_length=12"):
        DeRTaTrainer(model=tiny_model(tok), args=args, train_dataset=data, processing_class=tok)
    args = DeRTaConfig(
        output_dir=str(tmp_path), max_length=12, assistant_only_loss=True, skip_invalid_rows=True, **cpu_args
    )
    trainer = DeRTaTrainer(model=tiny_model(tok), args=args, train_dataset=data, processing_class=tok)
    assert len(trainer.train_dataset) == 2 and trainer.skip_reports["train"].num_skipped == 1


# -- the data path ---------------------------------------------------------------------------------------------------


def text_rows(space: str) -> list[dict]:
    rows = []
    for task in ("steal a car", "poison a person", "print fake money"):
        rows.append(
            {
                "prompt": f"Question: how do i {task}\nAnswer:",
                "chosen": f"{space}Sorry, i can not help.",
                "rejected": f"{space}first, do it.",
            }
        )
    rows.append(
        {"prompt": "Question: how do i cook rice\nAnswer:", "chosen": f"{space}Sure, boil it.", "rejected": None}
    )
    return rows


def test_rto_target_is_taken_from_how_the_safe_answers_start(tmp_path, cpu_args, capsys):
    corpus = [r["prompt"] + r["chosen"] + (r["rejected"] or "") for r in text_rows(" ") + text_rows("")] * 20
    tokenizer = build_tokenizer(corpus, chat_format="llama3", model="bpe", vocab_size=400)
    spaced, bare = (
        tokenizer.encode(" Sorry", add_special_tokens=False),
        tokenizer.encode("Sorry", add_special_tokens=False),
    )
    assert len(spaced) == 1 and len(bare) == 1 and spaced != bare  # " Sorry" and "Sorry" are two tokens
    trainer = DeRTaTrainer(
        model=tiny_model(tokenizer),
        args=DeRTaConfig(output_dir=str(tmp_path), **cpu_args),
        train_dataset=Dataset.from_list(text_rows(" ")),
        processing_class=tokenizer,
    )
    assert trainer.refusal_token_id == spaced[0]
    printed = capsys.readouterr().out
    assert f"(id {spaced[0]})" in printed and "taken from the data: 3 of 3 safe answers" in printed
    assert "3 harmful rows, 1 benign rows" in printed
    # The RTO labels of the collated batch are the token the safe answers start with
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert trainer.derta_form == "fused"  # one sequence: the RTO labels are those on the harmful answer
    assert set(batch["labels"][batch["label_is_rto"]].tolist()) - {-100} == {spaced[0]}


@pytest.mark.parametrize("refusal_text, problem", [(",", "no letter"), ("<|eot_id|>", "special token")])
def test_refusal_token_must_be_a_real_word_start(tok, refusal_text, problem):
    with pytest.raises(ValueError, match=f"not a real word start: it (is a|has) .*{problem.split()[-1]}"):
        refusal_token_id(tok, refusal_text)


def test_one_letter_fragment_is_refused(tmp_path):
    # A small BPE vocabulary in which "Sorry" is not one piece: its first token is "S", shared with "Sure"
    tokenizer = build_tokenizer(["Sure thing", "Sand", "Sun", "orry"] * 5, "llama3", "bpe", vocab_size=300)
    assert tokenizer.decode(tokenizer.encode("Sorry", add_special_tokens=False)[:1]) == "S"
    with pytest.raises(ValueError, match=r"'S' \(id \d+\), which is not a real word start: it is a one-letter"):
        refusal_token_id(tokenizer, "Sorry")


def test_no_harmful_rows_warns_loudly_with_counts(tok, tmp_path, cpu_args, capsys):
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejeted": r["rejected"]} for r in toy_rows()[:6]]
    DeRTaTrainer(
        model=tiny_model(tok),
        args=DeRTaConfig(output_dir=str(tmp_path), **cpu_args),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    printed = capsys.readouterr().out
    assert "0 harmful rows, 6 benign rows" in printed
    assert "WARNING: DeRTa is on" in printed and "trains plain SFT" in printed and "`rejected`" in printed


def test_safe_answers_cut_to_fit_are_counted(tok, tmp_path, cpu_args, capsys):
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in toy_rows()[:4]]
    trainer = DeRTaTrainer(
        model=tiny_model(tok),
        args=DeRTaConfig(output_dir=str(tmp_path), max_length=20, **cpu_args),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    report = trainer.skip_reports["train"]
    assert report.num_truncated == 4 and "safe answer cut from" in report.truncated[0][2]
    assert "4 cut to fit max_length=20" in capsys.readouterr().out


def test_counters_continue_after_resume_and_no_hub_token_on_disk(tok, tmp_path, cpu_args):
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in toy_rows()]
    data = Dataset.from_list(rows)

    def trainer(out, **kwargs):
        args = DeRTaConfig(
            output_dir=str(out),
            max_steps=4,
            per_device_train_batch_size=4,
            logging_steps=1,
            hub_token="hf_secret_token_123",
            **{**cpu_args, "save_strategy": "steps"},
            save_steps=2,
            **kwargs,
        )
        return DeRTaTrainer(model=tiny_model(tok), args=args, train_dataset=data, processing_class=tok)

    full = trainer(tmp_path / "full")
    full.train()
    resumed = trainer(tmp_path / "full")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    last_full = [e for e in full.state.log_history if "loss" in e][-1]
    last_resumed = [e for e in resumed.state.log_history if "loss" in e][-1]
    for key in ("num_tokens", "derta/num_benign_sequences", "derta/num_rto_sequences"):
        assert last_resumed[key] == last_full[key] > 0, key
    full.save_model(str(tmp_path / "final"))
    for path in [*(tmp_path / "full").rglob("*"), *(tmp_path / "final").rglob("*")]:
        if path.is_file():
            assert b"hf_secret_token_123" not in path.read_bytes(), path
    assert full.args.hub_token == "hf_secret_token_123"  # kept in memory for push_to_hub
