"""DeRTa's fused form: one tree-masked sequence per harmful row, with the naive form's loss and gradients."""

import dataclasses
import re

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from testing_utils import toy_rows
from transformers.testing_utils import CaptureLogger

from hf_safety import DeRTaConfig, DeRTaTrainer
from hf_safety.derta import FUSED, DeRTaCollator
from hf_safety.derta import trainer as trainer_module
from hf_safety.toy import tiny_model


# Forced prefix lengths by row index (None: k = len(H)); the other rows keep their draw
FORCED_K = {0: 0, 2: None, 4: 3}


@pytest.fixture(scope="module")
def dataset():
    all_rows = toy_rows()
    harmful = [r for r in all_rows if r["rejected"]][::5][:4]
    benign = [r for r in all_rows if not r["rejected"]][::5][:4]
    rows = [row for pair in zip(harmful, benign) for row in pair]
    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])


@pytest.fixture
def forced_prefixes(monkeypatch):
    draw = DeRTaCollator._sample_prefix_length

    def sample(self, example, k_max, rng):
        k = draw(self, example, k_max, rng)  # keeps the generator's state as it would be
        forced = FORCED_K.get(example.get("row_index"), k)
        return k_max if forced is None else min(forced, k_max)

    monkeypatch.setattr(DeRTaCollator, "_sample_prefix_length", sample)


def make_trainer(tokenizer, dataset, tmp_path, cpu_args, model, peft_config=None, **config):
    args = DeRTaConfig(output_dir=str(tmp_path), rto_weight=0.3, **{**cpu_args, **config})
    return DeRTaTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )


def loss_and_grads(trainer, batch):
    model = trainer.model
    model.zero_grad()
    num_items = batch["labels"][:, 1:].ne(-100).sum()  # as Trainer counts them
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), num_items, grads


def test_fused_layout_by_hand(forced_prefixes, monkeypatch):
    collator = DeRTaCollator(pad_token_id=0, refusal_token_id=9, derta_form="fused", return_sequence_kind=True)
    monkeypatch.setitem(FORCED_K, 4, 2)
    row = {"prompt_ids": [1, 2], "chosen_ids": [9, 5, 3], "rejected_ids": [6, 7, 8], "row_index": 4}
    benign = {"prompt_ids": [1], "chosen_ids": [4], "rejected_ids": [], "row_index": 1}
    batch = collator([row, benign])
    # P H x S, x a copy of h2 at h2's position; S goes on from P h1 h2
    assert batch["input_ids"].tolist() == [[1, 2, 6, 7, 8, 7, 9, 5, 3], [1, 4, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist()[0] == [0, 1, 2, 3, 4, 3, 4, 5, 6]
    assert batch["labels"].tolist()[0] == [-100, -100, 9, 9, 9, -100, 9, 5, 3]
    assert batch["label_is_rto"].tolist()[0] == [True] * 5 + [False] * 4
    assert batch["sequence_kind"].tolist() == [FUSED, 0] and batch["harmful_prefix_length"].tolist() == [2, 0]
    mask = batch["attention_mask"][:, 0].int()
    assert mask[0, 4].tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0]  # H is causal
    assert mask[0, 5].tolist() == [1, 1, 1, 0, 0, 1, 0, 0, 0]  # x sees P h1 and itself
    assert mask[0, 8].tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 1]  # S sees P h1 x and the earlier S
    assert mask[1].diagonal().tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0]  # padding attends, but only to real tokens
    assert mask[1, 5].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0]


def test_padding_free_layouts_by_hand(forced_prefixes, monkeypatch):
    monkeypatch.setitem(FORCED_K, 4, 2)
    row = {"prompt_ids": [1, 2], "chosen_ids": [9, 5, 3], "rejected_ids": [6, 7, 8], "row_index": 4}
    benign = [
        {"prompt_ids": [1], "chosen_ids": [4, 3], "rejected_ids": [], "row_index": 1},
        {"prompt_ids": [1], "chosen_ids": [5], "chosen_labels": [5], "rejected_ids": [], "row_index": 3},
    ]
    # naive: one row, (a) (b) and the benign sequences one after the other, no mask, first labels dropped
    naive = DeRTaCollator(pad_token_id=0, refusal_token_id=9, return_sequence_kind=True, padding_free=True)
    batch = naive([row, *benign])
    assert batch["input_ids"].tolist() == [[1, 2, 6, 7, 9, 5, 3, 1, 2, 6, 7, 8, 1, 4, 3, 1, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100] * 4 + [9, 5, 3] + [-100, -100, 9, 9, 9] + [-100, 4, 3, -100, 5]]
    assert batch["label_is_rto"].tolist() == [[False] * 7 + [True] * 5 + [False] * 5]
    assert "attention_mask" not in batch and batch["cu_seq_lens_q"].tolist() == [0, 7, 12, 15, 17]
    assert batch["max_length_q"] == 7 and batch["sequence_kind"].tolist() == [1, 2, 0, 0]
    # fused: rows as long as the longest sequence (P H x S, 9 tokens), best fit: the benign rows share one
    fused = dataclasses.replace(naive, derta_form="fused")
    batch = fused([row, *benign])
    assert batch["input_ids"].tolist() == [[1, 2, 6, 7, 8, 7, 9, 5, 3], [1, 4, 3, 1, 5, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5, 6], [0, 1, 2, 0, 1, 0, 0, 0, 0]]
    assert batch["labels"][1].tolist() == [-100, 4, 3, -100, 5] + [-100] * 4
    mask = batch["attention_mask"][:, 0].int()
    assert mask[0, 8].tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 1]  # the tree, as in the padded layout
    assert mask[1, 2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]  # first benign sequence: causal, on its own
    assert mask[1, 4].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0]  # the second sees only itself
    assert mask[1, 6].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]  # padding: the row's first token, never itself
    assert mask.diagonal(dim1=-2, dim2=-1).sum() == 9 + 5  # what the trainer counts as input tokens: no padding


MODELS = {
    "llama-sdpa": ("llama3_tokenizer", "llama", {}),
    "llama-eager": ("llama3_tokenizer", "llama", {"attn_implementation": "eager"}),
    # a window shorter than the rows, so the fused mask must apply it
    "mistral-window": ("mistral_tokenizer", "mistral", {"sliding_window": 7}),
}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name", list(MODELS))
def test_fused_matches_naive_loss_and_gradients(name, lora, request, dataset, tmp_path, cpu_args, forced_prefixes):
    tokenizer_name, architecture, overrides = MODELS[name]
    tokenizer = request.getfixturevalue(tokenizer_name)
    model = tiny_model(tokenizer, architecture, **overrides)
    peft_config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False) if lora else None
    trainer = make_trainer(tokenizer, dataset, tmp_path, cpu_args, model, peft_config, rto_position_keep=0.7)
    assert trainer.derta_form == "fused"  # the default
    fused = dataclasses.replace(trainer.data_collator, deterministic=True)
    assert fused.sliding_window == overrides.get("sliding_window")
    naive = dataclasses.replace(fused, derta_form="naive", sliding_window=None)
    rows = [trainer.train_dataset[i] for i in range(len(dataset))]
    # an empty prompt with an empty prefix: the safe answer starts (a), its first token is never scored
    rows.append({"prompt_ids": [], "chosen_ids": rows[0]["chosen_ids"], "rejected_ids": [5, 6, 7], "row_index": 0})
    naive_batch, fused_batch = naive(rows), fused(rows)
    n_harmful = sum(bool(row["rejected_ids"]) for row in rows)
    assert (fused_batch["sequence_kind"] == FUSED).sum() == n_harmful
    assert len(naive_batch["input_ids"]) == len(fused_batch["input_ids"]) + n_harmful
    assert fused_batch["harmful_prefix_length"][[0, 2, 4]].tolist() == [0, len(rows[2]["rejected_ids"]), 3]
    assert fused_batch["attention_mask"].shape[1:] == (1, *fused_batch["input_ids"].shape[1:] * 2)

    trainer.model.train()
    naive_loss, naive_items, naive_grads = loss_and_grads(trainer, naive_batch)
    fused_loss, fused_items, fused_grads = loss_and_grads(trainer, fused_batch)
    assert naive_items == fused_items
    assert torch.allclose(naive_loss, fused_loss, atol=1e-5), (naive_loss, fused_loss)
    assert naive_grads.keys() == fused_grads.keys() and naive_grads
    assert all("lora_" in n for n in naive_grads) == lora
    worst = max((naive_grads[n] - fused_grads[n]).abs().max().item() for n in naive_grads)
    assert worst < 1e-5, worst
    print(
        f"{name} {'lora' if lora else 'full'}: |Δloss| {(naive_loss - fused_loss).abs().item():.2e}, |Δgrad| {worst:.2e}"
    )

    # padding-free: every sequence of the batch in one row, for either form
    for form in ("naive", "fused"):
        collator = dataclasses.replace(fused if form == "fused" else naive, padding_free=True, pad_to_multiple_of=8)
        batch = collator(rows)
        assert batch["input_ids"].shape[1] % 8 == 0
        if form == "naive":  # one row
            assert batch["input_ids"].shape[0] == 1
        else:  # rows as long as the longest sequence, with fewer padding tokens than one sequence per row
            longest = fused_batch["attention_mask"][:, 0].diagonal(dim1=-2, dim2=-1).sum(-1).max()
            assert batch["input_ids"].shape[0] <= len(batch["sequence_kind"])
            assert batch["input_ids"].shape[1] == -(-longest // 8) * 8
        assert ("attention_mask" in batch) == (form == "fused")  # naive: the model splits on the position ids
        assert (
            batch["sequence_kind"].tolist()
            == (fused_batch if form == "fused" else naive_batch)["sequence_kind"].tolist()
        )
        loss, items, grads = loss_and_grads(trainer, batch)
        assert items == naive_items
        assert torch.allclose(naive_loss, loss, atol=1e-5), (form, naive_loss, loss)
        worst = max((naive_grads[n] - grads[n]).abs().max().item() for n in naive_grads)
        assert worst < 1e-5, (form, worst)


@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "padding_free"])
def test_fused_training_step_matches_naive(llama3_tokenizer, dataset, tmp_path, cpu_args, padding_free):
    common = dict(max_steps=1, per_device_train_batch_size=8, learning_rate=0.5, optim="sgd", logging_steps=1, seed=3)
    runs = {}
    for form in ("naive", "fused"):
        trainer = make_trainer(
            llama3_tokenizer,
            dataset,
            tmp_path / form,
            cpu_args,
            tiny_model(llama3_tokenizer),
            derta_form=form,
            # the reference is always the padded naive form
            padding_free=padding_free and form == "fused",
            **common,
        )
        assert trainer.derta_form == form and trainer.data_collator.padding_free == (padding_free and form == "fused")
        assert trainer.args.padding_free == (padding_free and form == "fused")  # restored after SFTTrainer's init
        trainer.train()
        runs[form] = trainer
    naive, fused = runs["naive"], runs["fused"]
    for (name, p), (_, q) in zip(naive.model.named_parameters(), fused.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    naive_log, fused_log = (next(e for e in run.state.log_history if "loss" in e) for run in (naive, fused))
    for key in ("loss", "derta/mle_loss", "derta/rto_loss", "derta/mean_prefix_length"):
        assert naive_log[key] == pytest.approx(fused_log[key], abs=1e-5), key
    for kind in ("benign", "harmful_prefix", "rto"):
        assert naive_log[f"derta/num_{kind}_sequences"] == fused_log[f"derta/num_{kind}_sequences"] == 4
    assert fused_log["num_tokens"] < naive_log["num_tokens"]  # the prompt and prefix are computed once


def test_naive_padding_free_training_step_matches_padded(llama3_tokenizer, dataset, tmp_path, cpu_args):
    common = dict(max_steps=1, per_device_train_batch_size=8, learning_rate=0.5, optim="sgd", logging_steps=1, seed=3)
    runs = [
        make_trainer(
            llama3_tokenizer,
            dataset,
            tmp_path / str(padding_free),
            cpu_args,
            tiny_model(llama3_tokenizer),
            derta_form="naive",
            padding_free=padding_free,
            **common,
        )
        for padding_free in (False, True)
    ]
    for trainer in runs:
        trainer.train()
    padded, packed = runs
    for (name, p), (_, q) in zip(padded.model.named_parameters(), packed.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    padded_log, packed_log = (next(e for e in run.state.log_history if "loss" in e) for run in runs)
    for key in ("loss", "derta/mle_loss", "derta/rto_loss", "derta/num_rto_sequences"):
        assert padded_log[key] == pytest.approx(packed_log[key], abs=1e-5), key
    assert packed_log["num_tokens"] == padded_log["num_tokens"]  # real tokens in both: padding is not counted


def test_packing_is_refused_with_a_pointer_to_padding_free(tmp_path):
    with pytest.raises(ValueError, match="'packing'.*padding_free=True"):
        DeRTaConfig(output_dir=str(tmp_path), packing=True, use_cpu=True)


def test_unsupported_attention_falls_back_to_naive(llama3_tokenizer, dataset, tmp_path, cpu_args):
    model = tiny_model(llama3_tokenizer)
    model.config._attn_implementation = "flash_attention_2"
    with CaptureLogger(trainer_module.logger) as captured:
        trainer = make_trainer(llama3_tokenizer, dataset, tmp_path, cpu_args, model, derta_form="fused")
    assert trainer.derta_form == trainer.data_collator.derta_form == "naive"
    assert "falls back to 'naive'" in captured.out and "flash_attention_2" in captured.out
    trainer.create_model_card()  # the card says which form trained
    card = (tmp_path / "README.md").read_text()
    assert re.search(r"derta_form\W+naive", card) and not re.search(r"derta_form\W+fused", card)


def test_derta_form_is_validated(tmp_path):
    with pytest.raises(ValueError, match="derta_form"):
        DeRTaConfig(output_dir=str(tmp_path), derta_form="tree")
