"""Peer suite: TRL's own `SFTTrainer` tests, run against `DeRTaTrainer` with both DeRTa switches off.

`DeRTaTrainer` / `DeRTaConfig(harmful_prefix=False, rto=False)` is meant to be a drop-in for TRL 1.16's
`SFTTrainer` / `SFTConfig`. These tests are adapted (rewritten, not copied) from huggingface/trl
`tests/test_sft_trainer.py` (classes `SFTTrainerTester` / `SFTTrainerTester2`; names in parentheses are SFTTrainer
features and error paths with no TRL test of that name):

    test_train (Qwen2 / MoE parametrization)           -> test_train_language_modeling[llama|qwen2|mixtral]
    test_train_model                                    -> test_train_language_modeling, test_logged_metrics_match_sft
    test_train_model_torch_dtype                        -> test_train_model_id_with_model_init_kwargs
    test_train_completion_only                          -> test_train_prompt_completion_{text,conversational},
                                                           test_train_prompt_completion_conversational_mistral_format
    test_train_assistant_only                           -> test_train_messages_multi_turn[assistant_only_loss]
    test_train_assistant_only_and_completion_only       -> test_train_assistant_only_and_completion_only
    test_train_assistant_only_iterable_dataset          -> test_train_assistant_only_iterable_dataset
    (assistant_only_loss error paths of SFTTrainer)     -> test_assistant_only_loss_{on_text,without_generation_markers}
    test_train_with_non_chatml_conversational_data      -> test_train_sharegpt_conversations
    test_train_with_pretokenized_data                   -> test_train_pretokenized[input_ids|labels|completion_mask]
    test_uncorrect_data / formatting_prompts_func       -> test_train_formatting_func, test_formatting_func_...raises
    test_train_toolcall_data                            -> test_train_tools_column
    test_train_with_chat_template_kwargs                -> test_train_chat_template_kwargs_column
    test_train_with_set_chat_template_from_path         -> test_train_chat_template_path
    (max_length + truncation_mode)                      -> test_train_max_length_truncation[...]
    (dataset_text_field, eos_token, pad_to_multiple_of) -> test_dataset_text_field, test_eos_token, test_pad_to_multiple_of
    (label_smoothing_factor)                            -> test_train_label_smoothing
    test_train_dft_loss                                 -> test_train_dft_loss
    test_train_with_iterable_dataset                    -> test_train_iterable_dataset, test_eval_iterable_dataset
    test_train_with_eval / test_train_with_multiple_eval_dataset -> test_train_with_eval, test_train_with_eval_dict
    (SFTTrainer.evaluate prepares a raw dataset)        -> test_evaluate_prepares_raw_dataset
    test_train_dense_with_peft_config                   -> test_train_peft_lora_config
    test_train_peft_model                               -> test_train_peft_model
    test_train_dense_with_peft_config_and_gradient_checkpointing -> test_train_peft_lora_gradient_checkpointing
    test_train_with_gradient_checkpointing              -> test_train_gradient_checkpointing
    test_prompt_tuning                                  -> test_train_prompt_tuning
    (gradient accumulation)                             -> test_gradient_accumulation_matches_sft
    (SFTTrainer's compute_loss_func / compute_metrics)  -> test_compute_loss_func, test_evaluate_with_compute_metrics
    test_sft_trainer (plain TrainingArguments)          -> test_training_arguments_converted
    (dataset_num_proc, shuffle_dataset)                 -> test_dataset_num_proc, test_shuffle_dataset
    test_tag_added / test_tag_added_peft                -> test_tag_added[...]
    (Dataset.with_transform error)                      -> test_with_transform_raises
    (skip_prepare_dataset)                              -> test_skip_prepare_dataset
    (empty dataset)                                     -> test_empty_dataset_raises_clear_error
    test_train_packing / test_train_padding_free        -> test_packing_and_padding_free_refused[...]

How they were adapted: no Hub (tiny Llama / Qwen2 / Mixtral models built from config, the word-level toy
tokenizer of `hf_safety.toy.build_tokenizer`, hand-made datasets in every format instead of `trl-internal-testing`
models and the `zen` datasets), CPU only (`use_cpu=True, bf16=False`), a few steps, and, where feasible, a stronger
check than TRL's: the same data, model and seed go through `SFTTrainer` and `DeRTaTrainer` with both DeRTa switches
off, and the collated batches (`input_ids`, `attention_mask`, `labels`) must be identical and the per-step losses
equal to 1e-5. Packing and padding-free are refused by DeRTa on purpose; that refusal is what is checked.
"""

import copy
import gc
import json

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, PromptEncoderConfig, TaskType, get_peft_model
from testing_utils import toy_rows
from transformers import AutoModelForCausalLM, Qwen2Config, TrainingArguments
from trl import SFTConfig, SFTTrainer

from hf_safety import DeRTaConfig, DeRTaTrainer
from hf_safety.toy import tiny_model


@pytest.fixture(scope="module", autouse=True)
def _fast_gc():
    """`Trainer.train` runs `gc.collect()` several times; freezing the heap that exists when this module starts (the
    torch/transformers import graph) keeps each collection from walking it. Unfrozen when the module is done."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


# -- data in every SFT format, from the toy world's benign rows (words the word-level tokenizer knows) --------------

_BENIGN = [row for row in toy_rows() if not row["rejected"]]
QA = [(row["prompt"][0]["content"], row["chosen"][0]["content"]) for row in _BENIGN[::5]][:8]  # 8 topics


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


def lm_text(column="text"):
    return Dataset.from_dict({column: [f"{q} {a}" for q, a in QA]})


def prompt_completion_text():
    # The completion starts with a space: the word-level tokenizer splits on whitespace
    return Dataset.from_dict({"prompt": [q for q, _ in QA], "completion": [" " + a for _, a in QA]})


def prompt_completion_conversational():
    return Dataset.from_dict({"prompt": [[_user(q)] for q, _ in QA], "completion": [[_assistant(a)] for _, a in QA]})


def messages_multi_turn():
    # Two assistant turns per conversation (and a system turn in every other one)
    rows = []
    for i, (q, a) in enumerate(QA):
        q2, a2 = QA[(i + 3) % len(QA)]
        system = [{"role": "system", "content": "hello there"}] if i % 2 else []
        rows.append(system + [_user(q), _assistant(a), _user(q2), _assistant(a2)])
    return Dataset.from_dict({"messages": rows})


def pretokenized(tokenizer, with_labels=False, with_completion_mask=False):
    rows = []
    for q, a in QA:
        prompt_ids = tokenizer(q)["input_ids"]
        ids = tokenizer(f"{q} {a}")["input_ids"] + [tokenizer.eos_token_id]
        row = {"input_ids": ids}
        if with_labels:
            row["labels"] = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
        if with_completion_mask:
            row["completion_mask"] = [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
        rows.append(row)
    return Dataset.from_list(rows)


# -- chat templates for the llama3-format test tokenizer -------------------------------------------------------------

_LLAMA3_TURNS = (
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Assistant contents and their end of turn inside `{% generation %}` markers (for `assistant_only_loss=True`)
GENERATION_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|eot_id|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Tool names rendered in a system turn, as real templates render the `tools` argument
TOOLS_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|start_header_id|>system<|end_header_id|>\n\n"
    "{% for tool in tools %}{{ tool['function']['name'] }} {% endfor %}<|eot_id|>{% endif %}" + _LLAMA3_TURNS
)
# A template variable set per row through `chat_template_kwargs`
KWARGS_TEMPLATE = (
    "{{ bos_token }}{% if greet %}<|start_header_id|>system<|end_header_id|>\n\nhello there<|eot_id|>{% endif %}"
    + _LLAMA3_TURNS
)


def with_template(tokenizer, template):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = template
    return tokenizer


# -- models ---------------------------------------------------------------------------------------------------------


def tiny_qwen2(tokenizer):
    """A tiny Qwen2 (tied embeddings, like TRL's tiny-Qwen2ForCausalLM-2.5), built from config."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


MODELS = {
    "llama": lambda tokenizer: tiny_model(tokenizer),
    "qwen2": tiny_qwen2,
    "mixtral": lambda tokenizer: tiny_model(tokenizer, "mixtral"),
}


# -- building the two trainers and comparing them -------------------------------------------------------------------

COMMON = dict(
    max_steps=2,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    learning_rate=1e-2,
    logging_steps=1,
    seed=42,
    gradient_checkpointing=False,  # TRL defaults to True; the tests that need it turn it on
)
SWITCHES_OFF = dict(harmful_prefix=False, rto=False)


def build(
    kind,
    tokenizer,
    train_dataset,
    tmp_path,
    cpu_args,
    *,
    model=None,
    model_fn=MODELS["llama"],
    processing_class="copy",
    trainer_kwargs=None,
    **config,
):
    """One trainer, `kind` "sft" (SFTTrainer/SFTConfig) or "derta" (DeRTaTrainer/DeRTaConfig with switches off)."""
    options = {**cpu_args, **COMMON, **config}
    if kind == "sft":
        args, trainer_cls = SFTConfig(output_dir=str(tmp_path / "sft"), **options), SFTTrainer
    else:
        args, trainer_cls = DeRTaConfig(output_dir=str(tmp_path / "derta"), **SWITCHES_OFF, **options), DeRTaTrainer
    if processing_class == "copy":  # each trainer gets its own tokenizer: SFTTrainer may change it (eos, template)
        processing_class = copy.deepcopy(tokenizer)
    return trainer_cls(
        model=model if model is not None else model_fn(tokenizer),
        args=args,
        train_dataset=train_dataset,
        processing_class=processing_class,
        **(trainer_kwargs or {}),
    )


def build_pair(tokenizer, train_dataset, tmp_path, cpu_args, **kwargs):
    """The same trainer twice, as SFTTrainer and as DeRTaTrainer (switches off); SFTTrainer first."""
    sft = build("sft", tokenizer, train_dataset, tmp_path, cpu_args, **kwargs)
    derta = build("derta", tokenizer, train_dataset, tmp_path, cpu_args, **kwargs)
    return sft, derta


def batches(trainer, dataset=None):
    """The collated batches of `dataset` (default: the prepared train dataset) in order, through the trainer's own
    column removal and collator (the eval dataloader: sequential, no shuffling)."""
    loader = trainer.get_eval_dataloader(trainer.train_dataset if dataset is None else dataset)
    return [{key: batch[key] for key in ("input_ids", "attention_mask", "labels")} for batch in loader]


def assert_same_batches(sft, derta, sft_dataset=None, derta_dataset=None):
    expected, got = batches(sft, sft_dataset), batches(derta, derta_dataset)
    assert len(got) == len(expected), f"{len(got)} batches, SFTTrainer makes {len(expected)}"
    tokenizer = sft._tokenizer
    for i, (want, have) in enumerate(zip(expected, got)):
        for key in want:
            if not torch.equal(want[key], have[key]):
                row = next(
                    (
                        r
                        for r in range(min(len(want[key]), len(have[key])))
                        if not torch.equal(want[key][r], have[key][r])
                    ),
                    0,
                )
                ids = want["input_ids"][row][want["attention_mask"][row].bool()]
                pytest.fail(
                    f"batch {i}, `{key}` differs from SFTTrainer's (shapes {tuple(have[key].shape)} vs "
                    f"{tuple(want[key].shape)}); first differing row {row}: SFTTrainer {want[key][row].tolist()}, "
                    f"DeRTaTrainer {have[key][row].tolist() if row < len(have[key]) else None}; "
                    f"text: {tokenizer.decode(ids)!r}"
                )
    return expected


def params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def losses(trainer):
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def train_both(sft, derta):
    """Trains both; checks `train_loss` is logged, the per-step losses agree to 1e-5 and the weights match."""
    start = params(derta.model)
    sft.train()
    derta.train()
    assert derta.state.log_history[-1].get("train_loss") is not None
    assert losses(derta) == pytest.approx(losses(sft), abs=1e-5)
    for (name, p), (_, q) in zip(sft.model.named_parameters(), derta.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), f"{name} differs from SFTTrainer's after training"
    return start


def assert_all_changed(start, model, skip=()):
    for name, before in start.items():
        if any(s in name for s in skip):
            continue
        assert not torch.allclose(before, model.get_parameter(name)), f"Parameter {name} has not changed"


def assert_only_adapters_changed(start, model, adapter_key="lora_"):
    changed = {n for n, before in start.items() if not torch.equal(before, model.get_parameter(n))}
    assert changed, "no parameter changed"
    assert all(adapter_key in n for n in changed), sorted(n for n in changed if adapter_key not in n)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= changed, f"trainable parameters that have not changed: {sorted(trainable - changed)}"


def labelled_text(tokenizer, batch, row=0):
    labels = batch["labels"][row]
    return tokenizer.decode(labels[labels != -100])


# -- language modelling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "mixtral"])
def test_train_language_modeling(architecture, llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, model_fn=MODELS[architecture])
    expected = assert_same_batches(sft, derta)
    # Language modelling: every real token is a label, the EOS appended
    batch = expected[0]
    assert torch.equal(batch["labels"] != -100, batch["attention_mask"].bool())
    assert batch["input_ids"][0][batch["attention_mask"][0].bool()][-1] == llama3_tokenizer.eos_token_id
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_logged_metrics_match_sft(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args)
    train_both(sft, derta)
    sft_logs = [log for log in sft.state.log_history if "loss" in log]
    derta_logs = [log for log in derta.state.log_history if "loss" in log]
    for want, have in zip(sft_logs, derta_logs):
        assert set(want) <= set(have), set(want) - set(have)
        for key in ("loss", "grad_norm", "entropy", "mean_token_accuracy", "num_tokens", "learning_rate"):
            assert have[key] == pytest.approx(want[key], abs=1e-5), key


def test_train_model_id_with_model_init_kwargs(llama3_tokenizer, tmp_path, cpu_args):
    path = tmp_path / "tiny"
    tiny_model(llama3_tokenizer).save_pretrained(path)
    llama3_tokenizer.save_pretrained(path)
    kwargs = dict(model_init_kwargs={"dtype": "float16"}, learning_rate=0.1)
    sft = SFTTrainer(
        model=str(path),
        args=SFTConfig(output_dir=str(tmp_path / "sft"), **{**cpu_args, **COMMON, **kwargs}),
        train_dataset=lm_text(),
    )
    derta = DeRTaTrainer(
        model=str(path),
        args=DeRTaConfig(output_dir=str(tmp_path / "derta"), **SWITCHES_OFF, **{**cpu_args, **COMMON, **kwargs}),
        train_dataset=lm_text(),
    )
    assert derta.model.dtype == torch.float16
    assert_same_batches(sft, derta)
    start = train_both(sft, derta)
    for name in start:
        assert derta.model.get_parameter(name).dtype == torch.float16
    assert_all_changed(start, derta.model, skip=("layernorm", "norm.weight"))


def test_dataset_text_field(llama3_tokenizer, tmp_path, cpu_args):
    data = lm_text(column="content")
    sft, derta = build_pair(llama3_tokenizer, data, tmp_path, cpu_args, dataset_text_field="content")
    assert_same_batches(sft, derta)
    train_both(sft, derta)


def test_eos_token(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, eos_token="<|end_of_text|>")
    new_eos = llama3_tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    batch = assert_same_batches(sft, derta)[0]
    assert batch["input_ids"][0][batch["attention_mask"][0].bool()][-1] == new_eos
    assert derta.processing_class.eos_token == "<|end_of_text|>"
    assert derta.model.config.eos_token_id == new_eos
    train_both(sft, derta)


def test_pad_to_multiple_of(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, pad_to_multiple_of=16)
    batch = assert_same_batches(sft, derta)[0]
    assert batch["input_ids"].shape[1] % 16 == 0


@pytest.mark.parametrize("truncation_mode", ["keep_start", "keep_end"])
@pytest.mark.parametrize("data", ["text", "prompt_completion_conversational"])
def test_train_max_length_truncation(data, truncation_mode, llama3_tokenizer, tmp_path, cpu_args):
    dataset = lm_text() if data == "text" else prompt_completion_conversational()
    max_length = 10 if data == "text" else 24  # cuts every row; leaves completion tokens in every row
    sft, derta = build_pair(
        llama3_tokenizer, dataset, tmp_path, cpu_args, max_length=max_length, truncation_mode=truncation_mode
    )
    batch = assert_same_batches(sft, derta)[0]
    assert batch["input_ids"].shape[1] == max_length
    train_both(sft, derta)


# -- prompt-completion ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("completion_only_loss", [None, True, False])
def test_train_prompt_completion_text(completion_only_loss, llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(
        llama3_tokenizer, prompt_completion_text(), tmp_path, cpu_args, completion_only_loss=completion_only_loss
    )
    batch = assert_same_batches(sft, derta)[0]
    q, a = QA[0]
    if completion_only_loss is False:
        assert labelled_text(llama3_tokenizer, batch) == f"<|begin_of_text|> {q} {a} <|eot_id|>"
    else:  # None means True for prompt-completion data
        assert labelled_text(llama3_tokenizer, batch) == f"{a} <|eot_id|>"
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


@pytest.mark.parametrize("completion_only_loss", [None, True, False])
def test_train_prompt_completion_conversational(completion_only_loss, llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(
        llama3_tokenizer,
        prompt_completion_conversational(),
        tmp_path,
        cpu_args,
        completion_only_loss=completion_only_loss,
    )
    batch = assert_same_batches(sft, derta)[0]
    q, a = QA[0]
    if completion_only_loss is False:
        assert q in labelled_text(llama3_tokenizer, batch)
    else:
        assert labelled_text(llama3_tokenizer, batch) == f"{a} <|eot_id|>"
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_train_prompt_completion_conversational_mistral_format(mistral_tokenizer, tmp_path, cpu_args):
    # `<s>[INST] ... [/INST]answer</s>`: no assistant header, the end of turn is the EOS written by the template
    sft, derta = build_pair(mistral_tokenizer, prompt_completion_conversational(), tmp_path, cpu_args)
    batch = assert_same_batches(sft, derta)[0]
    assert labelled_text(mistral_tokenizer, batch) == f"{QA[0][1]} </s>"
    train_both(sft, derta)


# -- conversational language modelling --------------------------------------------------------------------------------


@pytest.mark.parametrize("assistant_only_loss", [False, True])
def test_train_messages_multi_turn(assistant_only_loss, llama3_tokenizer, tmp_path, cpu_args):
    tokenizer = with_template(llama3_tokenizer, GENERATION_TEMPLATE)
    sft, derta = build_pair(
        tokenizer, messages_multi_turn(), tmp_path, cpu_args, assistant_only_loss=assistant_only_loss
    )
    batch = assert_same_batches(sft, derta)[0]
    (q, a), (_, a2) = QA[0], QA[3]
    if assistant_only_loss:  # both assistant turns, with their end of turn, and nothing else
        assert labelled_text(tokenizer, batch) == f"{a} <|eot_id|> {a2} <|eot_id|>"
    else:
        assert torch.equal(batch["labels"] != -100, batch["attention_mask"].bool())
        assert q in labelled_text(tokenizer, batch)
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_train_assistant_only_and_completion_only(llama3_tokenizer, tmp_path, cpu_args):
    # A user turn inside the completion: trained on neither with both switches on
    rows = [
        {"prompt": [_user(q)], "completion": [_assistant(a), _user(QA[(i + 1) % 8][0]), _assistant(a)]}
        for i, (q, a) in enumerate(QA)
    ]
    tokenizer = with_template(llama3_tokenizer, GENERATION_TEMPLATE)
    sft, derta = build_pair(
        tokenizer,
        Dataset.from_list(rows),
        tmp_path,
        cpu_args,
        assistant_only_loss=True,
        completion_only_loss=True,
    )
    batch = assert_same_batches(sft, derta)[0]
    a = QA[0][1]
    assert labelled_text(tokenizer, batch) == f"{a} <|eot_id|> {a} <|eot_id|>"
    train_both(sft, derta)


def test_train_assistant_only_iterable_dataset(llama3_tokenizer, tmp_path, cpu_args):
    tokenizer = with_template(llama3_tokenizer, GENERATION_TEMPLATE)
    data = messages_multi_turn().to_iterable_dataset()
    sft, derta = build_pair(tokenizer, data, tmp_path, cpu_args, assistant_only_loss=True)
    assert_same_batches(sft, derta)
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_assistant_only_loss_on_text_raises(llama3_tokenizer, tmp_path, cpu_args):
    with pytest.raises(ValueError, match="not conversational") as sft_error:
        build("sft", llama3_tokenizer, lm_text(), tmp_path, cpu_args, assistant_only_loss=True)
    with pytest.raises(ValueError, match="not conversational") as derta_error:
        build("derta", llama3_tokenizer, lm_text(), tmp_path, cpu_args, assistant_only_loss=True)
    assert str(derta_error.value) == str(sft_error.value)


def test_assistant_only_loss_without_generation_markers_raises(llama3_tokenizer, tmp_path, cpu_args):
    # The toy Llama-3 template has no `{% generation %}` markers and TRL cannot patch it: SFTTrainer refuses
    with pytest.raises(ValueError, match="generation") as sft_error:
        build("sft", llama3_tokenizer, messages_multi_turn(), tmp_path, cpu_args, assistant_only_loss=True)
    with pytest.raises(ValueError, match="generation") as derta_error:
        build("derta", llama3_tokenizer, messages_multi_turn(), tmp_path, cpu_args, assistant_only_loss=True)
    assert str(derta_error.value) == str(sft_error.value)


def test_train_sharegpt_conversations(llama3_tokenizer, tmp_path, cpu_args):
    def to_sharegpt(example):
        return {"conversations": [{"from": m["role"], "value": m["content"]} for m in example["messages"]]}

    data = messages_multi_turn().map(to_sharegpt, remove_columns="messages")
    sft, derta = build_pair(llama3_tokenizer, data, tmp_path, cpu_args)
    # The same tokens as the ChatML `messages` rows
    sft_messages = build("sft", llama3_tokenizer, messages_multi_turn(), tmp_path / "m", cpu_args)
    assert torch.equal(batches(sft)[0]["input_ids"], batches(sft_messages)[0]["input_ids"])
    assert_same_batches(sft, derta)
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_train_tools_column(llama3_tokenizer, tmp_path, cpu_args):
    tokenizer = with_template(llama3_tokenizer, TOOLS_TEMPLATE)
    tools = [
        {"type": "function", "function": {"name": name, "description": "x", "parameters": {}}}
        for name in ("water", "rice")
    ]
    data = messages_multi_turn().add_column("tools", [json.dumps(tools)] * len(QA))  # a JSON string, as in TRL's data
    sft, derta = build_pair(tokenizer, data, tmp_path, cpu_args)
    batch = assert_same_batches(sft, derta)[0]
    assert "water rice" in tokenizer.decode(batch["input_ids"][0])  # the tools reached the template
    train_both(sft, derta)


def test_train_chat_template_kwargs_column(llama3_tokenizer, tmp_path, cpu_args):
    tokenizer = with_template(llama3_tokenizer, KWARGS_TEMPLATE)
    data = prompt_completion_conversational().add_column(
        "chat_template_kwargs", [{"greet": bool(i % 2)} for i in range(len(QA))]
    )
    sft, derta = build_pair(tokenizer, data, tmp_path, cpu_args)
    batch = assert_same_batches(sft, derta)[0]
    assert "hello there" not in tokenizer.decode(batch["input_ids"][0])
    assert "hello there" in tokenizer.decode(batch["input_ids"][1])
    train_both(sft, derta)


def test_train_chat_template_path(llama3_tokenizer, tmp_path, cpu_args):
    template_path = tmp_path / "template.jinja"
    template_path.write_text(KWARGS_TEMPLATE.replace("{% if greet %}", "{% if true %}"))
    sft, derta = build_pair(
        llama3_tokenizer, messages_multi_turn(), tmp_path, cpu_args, chat_template_path=str(template_path)
    )
    assert derta.processing_class.chat_template == template_path.read_text()
    batch = assert_same_batches(sft, derta)[0]
    assert "hello there" in llama3_tokenizer.decode(batch["input_ids"][0])
    train_both(sft, derta)


# -- pre-tokenized data and formatting functions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns, completion_only_loss",
    [("input_ids", None), ("labels", None), ("completion_mask", None), ("completion_mask", True)],
)
def test_train_pretokenized(columns, completion_only_loss, llama3_tokenizer, tmp_path, cpu_args):
    data = pretokenized(
        llama3_tokenizer, with_labels=columns == "labels", with_completion_mask=columns == "completion_mask"
    )
    sft, derta = build_pair(llama3_tokenizer, data, tmp_path, cpu_args, completion_only_loss=completion_only_loss)
    batch = assert_same_batches(sft, derta)[0]
    q, a = QA[0]
    if columns == "labels" or completion_only_loss:
        assert labelled_text(llama3_tokenizer, batch) == f"{a} <|eot_id|>"
    else:  # SFTTrainer ignores a completion mask unless completion_only_loss=True (no "prompt" column)
        assert torch.equal(batch["labels"] != -100, batch["attention_mask"].bool())
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_skip_prepare_dataset(llama3_tokenizer, tmp_path, cpu_args):
    data = pretokenized(llama3_tokenizer, with_labels=True)
    sft, derta = build_pair(llama3_tokenizer, data, tmp_path, cpu_args, dataset_kwargs={"skip_prepare_dataset": True})
    assert_same_batches(sft, derta)
    train_both(sft, derta)


def formatting_func(example):
    return f"{example['question']} {example['answer']}"


def test_train_formatting_func(llama3_tokenizer, tmp_path, cpu_args):
    data = Dataset.from_dict({"question": [q for q, _ in QA], "answer": [a for _, a in QA]})
    sft, derta = build_pair(
        llama3_tokenizer, data, tmp_path, cpu_args, trainer_kwargs={"formatting_func": formatting_func}
    )
    batch = assert_same_batches(sft, derta)[0]
    assert labelled_text(llama3_tokenizer, batch) == f"<|begin_of_text|> {QA[0][0]} {QA[0][1]} <|eot_id|>"
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_formatting_func_with_completion_only_loss_raises(llama3_tokenizer, tmp_path, cpu_args):
    kwargs = dict(completion_only_loss=True, trainer_kwargs={"formatting_func": formatting_func})
    data = Dataset.from_dict({"question": [q for q, _ in QA], "answer": [a for _, a in QA]})
    with pytest.raises(ValueError, match="formatting function") as sft_error:
        build("sft", llama3_tokenizer, data, tmp_path, cpu_args, **kwargs)
    with pytest.raises(ValueError, match="formatting function") as derta_error:
        build("derta", llama3_tokenizer, data, tmp_path, cpu_args, **kwargs)
    assert str(derta_error.value) == str(sft_error.value)


# -- losses ---------------------------------------------------------------------------------------------------------


def test_train_label_smoothing(llama3_tokenizer, tmp_path, cpu_args):
    with pytest.warns(FutureWarning, match="label_smoothing_factor"):
        sft, derta = build_pair(
            llama3_tokenizer, prompt_completion_text(), tmp_path, cpu_args, label_smoothing_factor=0.1
        )
    assert derta.label_smoother is not None
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_train_dft_loss(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, prompt_completion_text(), tmp_path, cpu_args, loss_type="dft")
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_gradient_accumulation_matches_sft(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(
        llama3_tokenizer,
        prompt_completion_conversational(),
        tmp_path,
        cpu_args,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
    )
    train_both(sft, derta)


def test_compute_loss_func(llama3_tokenizer, tmp_path, cpu_args):
    # Deprecated in TRL 1.16 (FutureWarning), still part of SFTTrainer's signature
    def loss_func(outputs, labels, num_items_in_batch=None):
        logits, labels = outputs.logits[:, :-1], labels[:, 1:]
        total = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        return total / (num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum())

    with pytest.warns(FutureWarning, match="compute_loss_func"):
        sft, derta = build_pair(
            llama3_tokenizer,
            prompt_completion_text(),
            tmp_path,
            cpu_args,
            trainer_kwargs={"compute_loss_func": loss_func},
        )
    train_both(sft, derta)


# -- datasets: streaming, evaluation, errors -------------------------------------------------------------------------


def test_train_iterable_dataset(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, lm_text().to_iterable_dataset(), tmp_path, cpu_args, max_steps=3)
    assert_same_batches(sft, derta)
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_eval_iterable_dataset(llama3_tokenizer, tmp_path, cpu_args):
    eval_data = prompt_completion_text().select(range(4)).to_iterable_dataset()
    kwargs = dict(eval_strategy="steps", eval_steps=1, trainer_kwargs={"eval_dataset": eval_data})
    sft, derta = build_pair(llama3_tokenizer, prompt_completion_text(), tmp_path, cpu_args, **kwargs)
    train_both(sft, derta)
    sft_eval = [log["eval_loss"] for log in sft.state.log_history if "eval_loss" in log]
    derta_eval = [log["eval_loss"] for log in derta.state.log_history if "eval_loss" in log]
    assert len(derta_eval) == 2 and derta_eval == pytest.approx(sft_eval, abs=1e-5)


def test_train_with_eval(llama3_tokenizer, tmp_path, cpu_args):
    eval_data = prompt_completion_conversational().select(range(4))
    kwargs = dict(eval_strategy="steps", eval_steps=1, trainer_kwargs={"eval_dataset": eval_data})
    sft, derta = build_pair(llama3_tokenizer, prompt_completion_conversational(), tmp_path, cpu_args, **kwargs)
    assert_same_batches(sft, derta, sft.eval_dataset, derta.eval_dataset)
    train_both(sft, derta)
    sft_eval = [log["eval_loss"] for log in sft.state.log_history if "eval_loss" in log]
    derta_eval = [log["eval_loss"] for log in derta.state.log_history if "eval_loss" in log]
    assert len(derta_eval) == 2 and derta_eval == pytest.approx(sft_eval, abs=1e-5)


def test_train_with_eval_dict(llama3_tokenizer, tmp_path, cpu_args):
    eval_data = {"data1": lm_text().select(range(4)), "data2": lm_text().select(range(4, 8))}
    kwargs = dict(eval_strategy="steps", eval_steps=2, trainer_kwargs={"eval_dataset": eval_data})
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, **kwargs)
    train_both(sft, derta)
    for name in ("eval_data1_loss", "eval_data2_loss"):
        want = [log[name] for log in sft.state.log_history if name in log]
        got = [log[name] for log in derta.state.log_history if name in log]
        assert got and got == pytest.approx(want, abs=1e-5), name


def test_evaluate_prepares_raw_dataset(llama3_tokenizer, tmp_path, cpu_args):
    # SFTTrainer.evaluate prepares a dataset passed to it directly, in any SFT format
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args)
    raw = prompt_completion_conversational().select(range(4))
    want, got = sft.evaluate(raw), derta.evaluate(raw)
    assert got["eval_loss"] == pytest.approx(want["eval_loss"], abs=1e-5)


def test_evaluate_with_compute_metrics(llama3_tokenizer, tmp_path, cpu_args):
    def token_accuracy(eval_pred):
        logits, labels = eval_pred
        predictions, labels = logits[:, :-1].argmax(-1), labels[:, 1:]
        mask = labels != -100
        return {"token_acc": float((predictions == labels)[mask].mean())}

    eval_data = prompt_completion_conversational().select(range(4))
    kwargs = dict(trainer_kwargs={"eval_dataset": eval_data, "compute_metrics": token_accuracy})
    sft, derta = build_pair(llama3_tokenizer, prompt_completion_conversational(), tmp_path, cpu_args, **kwargs)
    want, got = sft.evaluate(), derta.evaluate()
    assert got["eval_loss"] == pytest.approx(want["eval_loss"], abs=1e-5)
    assert got["eval_token_acc"] == pytest.approx(want["eval_token_acc"], abs=1e-6)


def test_training_arguments_converted(llama3_tokenizer, tmp_path, cpu_args):
    # TRL's first tests passed plain `TrainingArguments`; the trainer converts them to its own config
    trainers = []
    for kind, trainer_cls in (("sft", SFTTrainer), ("derta", DeRTaTrainer)):
        args = TrainingArguments(output_dir=str(tmp_path / kind), **{**cpu_args, **COMMON})
        trainers.append(
            trainer_cls(
                model=tiny_model(llama3_tokenizer),
                args=args,
                train_dataset=lm_text(),
                processing_class=copy.deepcopy(llama3_tokenizer),
            )
        )
    sft, derta = trainers
    assert isinstance(derta.args, DeRTaConfig)
    assert_same_batches(sft, derta)
    train_both(sft, derta)


def test_dataset_num_proc(llama3_tokenizer, tmp_path, cpu_args):
    data = Dataset.from_dict({"messages": list(messages_multi_turn()["messages"]) * 2})
    sft, derta = build_pair(llama3_tokenizer, data, tmp_path, cpu_args, dataset_num_proc=2)
    assert_same_batches(sft, derta)
    train_both(sft, derta)


def test_shuffle_dataset(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, shuffle_dataset=True)
    unshuffled = build("sft", llama3_tokenizer, lm_text(), tmp_path / "plain", cpu_args)
    assert list(sft.train_dataset["input_ids"]) != list(unshuffled.train_dataset["input_ids"])
    assert_same_batches(sft, derta)
    train_both(sft, derta)


def test_with_transform_raises(llama3_tokenizer, tmp_path, cpu_args):
    data = lm_text().with_transform(lambda batch: batch)
    with pytest.raises(ValueError, match="with_transform"):
        build("sft", llama3_tokenizer, data, tmp_path, cpu_args)
    with pytest.raises(ValueError, match="with_transform"):
        build("derta", llama3_tokenizer, data, tmp_path, cpu_args)


def test_empty_dataset_raises_clear_error(llama3_tokenizer, tmp_path, cpu_args):
    # (SFTTrainer itself lets a bare StopIteration escape from `next(iter(train_dataset))` here)
    empty = Dataset.from_dict({"text": []})
    with pytest.raises(ValueError, match="empty"):
        build("derta", llama3_tokenizer, empty, tmp_path, cpu_args)


@pytest.mark.parametrize("strategy", ["bfd", "wrapped"])
def test_packing_refused_with_a_pointer_to_padding_free(strategy, llama3_tokenizer, tmp_path, cpu_args):
    # DeRTa draws its sequences per batch, so dataset rows cannot be packed ahead of time
    with pytest.raises(ValueError, match="'packing'.*padding_free=True"):
        build("derta", llama3_tokenizer, lm_text(), tmp_path, cpu_args, packing=True, packing_strategy=strategy)


@pytest.mark.parametrize("data", [lm_text, prompt_completion_conversational], ids=["lm", "prompt_completion"])
def test_train_padding_free_matches_sft(data, llama3_tokenizer, tmp_path, cpu_args):
    # SFTTrainer's padding-free: one row per batch, sequences separated by position ids (no max_length, as it asks)
    sft, derta = build_pair(
        llama3_tokenizer, data(), tmp_path, cpu_args, padding_free=True, max_length=None, per_device_train_batch_size=3
    )
    batch = next(iter(derta.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert batch["position_ids"][0].eq(0).sum() == 3  # three sequences in the row
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


# -- PEFT, gradient checkpointing, tags ------------------------------------------------------------------------------


def lora_config():
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def test_train_peft_lora_config(llama3_tokenizer, tmp_path, cpu_args):
    kwargs = dict(max_steps=3, trainer_kwargs={"peft_config": lora_config()})
    sft, derta = build_pair(llama3_tokenizer, prompt_completion_conversational(), tmp_path, cpu_args, **kwargs)
    assert isinstance(derta.model, PeftModel)
    start = train_both(sft, derta)
    assert_only_adapters_changed(start, derta.model)


def test_train_peft_model(llama3_tokenizer, tmp_path, cpu_args):
    trainers = []
    for kind in ("sft", "derta"):
        torch.manual_seed(0)
        model = get_peft_model(tiny_model(llama3_tokenizer), lora_config())
        trainers.append(build(kind, llama3_tokenizer, lm_text(), tmp_path, cpu_args, model=model, max_steps=3))
    sft, derta = trainers
    assert isinstance(derta.model, PeftModel)
    start = train_both(sft, derta)
    assert_only_adapters_changed(start, derta.model)


def test_train_peft_lora_gradient_checkpointing(llama3_tokenizer, tmp_path, cpu_args):
    kwargs = dict(max_steps=3, gradient_checkpointing=True, trainer_kwargs={"peft_config": lora_config()})
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, **kwargs)
    start = train_both(sft, derta)
    assert_only_adapters_changed(start, derta.model)


def test_train_gradient_checkpointing(llama3_tokenizer, tmp_path, cpu_args):
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, gradient_checkpointing=True)
    start = train_both(sft, derta)
    assert_all_changed(start, derta.model)


def test_train_prompt_tuning(llama3_tokenizer, tmp_path, cpu_args):
    peft_config = PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4, encoder_hidden_size=16)
    kwargs = dict(max_steps=3, trainer_kwargs={"peft_config": peft_config})
    sft, derta = build_pair(llama3_tokenizer, lm_text(), tmp_path, cpu_args, **kwargs)
    start = train_both(sft, derta)
    assert derta.state.log_history[-2].get("mean_token_accuracy") is not None
    for name, before in start.items():
        after = derta.model.get_parameter(name)
        if "prompt_encoder" in name:
            assert not torch.allclose(before, after), f"Parameter {name} has not changed"
        else:
            assert torch.equal(before, after), f"Parameter {name} has changed"


@pytest.mark.parametrize("peft", [False, True], ids=["full", "peft"])
def test_tag_added(peft, llama3_tokenizer, tmp_path, cpu_args):
    kwargs = {"trainer_kwargs": {"peft_config": lora_config()}} if peft else {}
    trainer = build("derta", llama3_tokenizer, lm_text(), tmp_path, cpu_args, **kwargs)
    for tag in ("sft", "trl"):
        assert tag in trainer.model.model_tags
