"""DeRTaTrainer: exact loss, gradient accumulation, the SFT switch, PEFT, save/reload, resume, metrics, card."""

import dataclasses

import pytest
import torch
from datasets import Dataset
from peft import AutoPeftModelForCausalLM, LoraConfig
from testing_utils import toy_rows
from transformers import AutoModelForCausalLM, TrainerCallback
from trl import SFTConfig, SFTTrainer

from hf_safety import DeRTaConfig, DeRTaTrainer
from hf_safety.derta import RTO
from hf_safety.toy import tiny_model


@pytest.fixture(scope="module")
def rows():
    # 6 harmful + 6 benign rows, interleaved
    all_rows = toy_rows()
    harmful = [r for r in all_rows if r["rejected"]][::5][:6]
    benign = [r for r in all_rows if not r["rejected"]][::5][:6]
    return [row for pair in zip(harmful, benign) for row in pair]


@pytest.fixture(scope="module")
def dataset(rows):
    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])


def make_trainer(tokenizer, dataset, tmp_path, cpu_args, model=None, **config):
    args = DeRTaConfig(output_dir=str(tmp_path), **{**cpu_args, **config})
    return DeRTaTrainer(
        model=model if model is not None else tiny_model(tokenizer),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )


def params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_loss_matches_manual_reference(llama3_tokenizer, dataset, tmp_path, cpu_args):
    # the naive form's batch, written out by hand below (the fused form's equality with it: test_derta_fused.py)
    trainer = make_trainer(llama3_tokenizer, dataset, tmp_path, cpu_args, rto_weight=0.3, derta_form="naive")
    collator = dataclasses.replace(trainer.data_collator, deterministic=True)
    batch = collator([trainer.train_dataset[i] for i in range(8)])
    assert (batch["sequence_kind"] == RTO).sum() == 4

    model = trainer.model
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Reference: per-token cross-entropy, summed over labelled tokens, RTO tokens weighted by λ, / labelled count
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none") * (
        labels != -100
    )
    weights = torch.where(batch["sequence_kind"][:, None] == RTO, 0.3, 1.0)
    reference = (nll * weights).sum() / (labels != -100).sum()
    assert torch.allclose(loss, reference, atol=1e-5), (loss, reference)

    # With `num_items_in_batch` (as Trainer passes it under gradient accumulation) the sum is divided by it
    with torch.no_grad():
        loss_n = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(1000))
    assert torch.allclose(loss_n, (nll * weights).sum() / 1000, atol=1e-6)


def test_gradient_accumulation_is_exact(llama3_tokenizer, dataset, tmp_path, cpu_args):
    common = dict(max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", logging_steps=1)
    one = make_trainer(llama3_tokenizer, dataset, tmp_path / "one", cpu_args, per_device_train_batch_size=8, **common)
    four = make_trainer(
        llama3_tokenizer,
        dataset,
        tmp_path / "four",
        cpu_args,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        **common,
    )
    start = params(one.model)
    one.train()
    four.train()
    after_one, after_four = params(one.model), params(four.model)
    assert any(not torch.equal(start[n], after_one[n]) for n in start)
    for name in start:
        assert torch.allclose(after_one[name], after_four[name], atol=1e-6), name
    assert one.state.log_history[0]["loss"] == pytest.approx(four.state.log_history[0]["loss"], abs=1e-5)


def test_switches_off_trains_exactly_like_sft(llama3_tokenizer, dataset, rows, tmp_path, cpu_args):
    common = dict(max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1)
    derta = make_trainer(
        llama3_tokenizer, dataset, tmp_path / "derta", cpu_args, harmful_prefix=False, rto=False, **common
    )
    sft_data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
    sft = SFTTrainer(
        model=tiny_model(llama3_tokenizer),
        args=SFTConfig(output_dir=str(tmp_path / "sft"), **cpu_args, **common),
        train_dataset=sft_data,
        processing_class=llama3_tokenizer,
    )
    assert derta.data_collator([derta.train_dataset[0]])["input_ids"].tolist() == [sft.train_dataset[0]["input_ids"]]
    derta.train()
    sft.train()
    derta_losses = [log["loss"] for log in derta.state.log_history if "loss" in log]
    sft_losses = [log["loss"] for log in sft.state.log_history if "loss" in log]
    assert derta_losses == pytest.approx(sft_losses, abs=1e-6)
    for (name, p), (_, q) in zip(derta.model.named_parameters(), sft.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_metrics_count_sequences_and_split_losses(llama3_tokenizer, dataset, tmp_path, cpu_args):
    trainer = make_trainer(
        llama3_tokenizer,
        dataset,
        tmp_path,
        cpu_args,
        num_train_epochs=1,
        per_device_train_batch_size=4,
        logging_steps=3,
    )
    trainer.train()
    log = next(entry for entry in trainer.state.log_history if "loss" in entry)
    # One epoch over 6 harmful + 6 benign rows: each harmful row gives a prefix and an RTO sequence
    assert log["derta/num_harmful_prefix_sequences"] == 6
    assert log["derta/num_rto_sequences"] == 6
    assert log["derta/num_benign_sequences"] == 6
    assert log["derta/mle_loss"] > 0 and log["derta/rto_loss"] > 0
    assert 0.0 <= log["derta/rto_refusal_accuracy"] <= 1.0


def test_lora_save_reload_same_outputs(llama3_tokenizer, dataset, tmp_path, cpu_args):
    base_path = tmp_path / "base"
    tiny_model(llama3_tokenizer).save_pretrained(base_path)
    llama3_tokenizer.save_pretrained(base_path)
    trainer = DeRTaTrainer(
        model=str(base_path),  # loaded by path, the same code path as a Hub id
        args=DeRTaConfig(output_dir=str(tmp_path / "out"), max_steps=3, learning_rate=1e-2, **cpu_args),
        train_dataset=dataset,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    start = params(trainer.model)
    trainer.train()
    after = params(trainer.model)
    changed = {n for n in start if not torch.equal(start[n], after[n])}
    assert changed and all("lora_" in n for n in changed)
    trainer.save_model()

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    trainer.model.eval()
    reloaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert torch.allclose(trainer.model(**inputs).logits, reloaded(**inputs).logits, atol=1e-5)


def test_full_model_save_reload_and_card(llama3_tokenizer, dataset, tmp_path, cpu_args):
    trainer = make_trainer(llama3_tokenizer, dataset, tmp_path, cpu_args, max_steps=2)
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    batch = trainer.data_collator([trainer.train_dataset[0]])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.model(**inputs).logits, reloaded(**inputs).logits, atol=1e-6)
    card = (tmp_path / "README.md").read_text()
    assert "DeRTa" in card and "2407.09121" in card


class _StopAt(TrainerCallback):
    """Simulates a killed run: stops right after the checkpoint of `step` is written."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_from_checkpoint_reproduces_uninterrupted_run(llama3_tokenizer, dataset, tmp_path, cpu_args):
    # 12 rows, 4 per batch: 3 steps per epoch; the kill at step 4 lands inside the second epoch
    common = dict(
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=2,
        **{**cpu_args, "save_strategy": "steps"},
    )
    full = make_trainer(llama3_tokenizer, dataset, tmp_path / "full", {}, **common)
    full.train()

    killed = make_trainer(llama3_tokenizer, dataset, tmp_path / "resumed", {}, **common)
    killed.add_callback(_StopAt(4))
    killed.train()
    assert killed.state.global_step == 4

    resumed = make_trainer(llama3_tokenizer, dataset, tmp_path / "resumed", {}, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-4"))
    assert resumed.state.global_step == 6

    def step_logs(trainer, steps):
        return [
            value
            for e in trainer.state.log_history
            if "loss" in e and e["step"] in steps
            for value in (e["step"], e["loss"], e.get("derta/mean_prefix_length", -1))
        ]

    # Steps 5 and 6 see the same rows, the same prefix draws and the same weights as the uninterrupted run
    assert step_logs(resumed, {5, 6}) == pytest.approx(step_logs(full, {5, 6}))
    for (name, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_skip_invalid_rows_reports(llama3_tokenizer, rows, tmp_path, cpu_args):
    bad = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    bad[3]["chosen"] = None
    bad[7]["prompt"] = []
    data = Dataset.from_list(bad)
    with pytest.raises(ValueError, match=r"row 3, field 'chosen'"):
        make_trainer(llama3_tokenizer, data, tmp_path, cpu_args)
    trainer = make_trainer(llama3_tokenizer, data, tmp_path, cpu_args, skip_invalid_rows=True)
    report = trainer.skip_reports["train"]
    assert report.num_skipped == 2 and [r for r, _, _ in report.skipped] == [3, 7]
    assert len(trainer.train_dataset) == len(rows) - 2


def test_mixtral_moe_trains_with_aux_loss(llama3_tokenizer, dataset, tmp_path, cpu_args):
    model = tiny_model(llama3_tokenizer, "mixtral")
    trainer = make_trainer(
        llama3_tokenizer,
        dataset,
        tmp_path,
        cpu_args,
        model=model,
        max_steps=2,
        logging_steps=1,
        router_aux_loss_coef=0.01,
    )
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["aux_loss"] > 0 and "derta/rto_loss" in log


def test_fused_lm_head_never_builds_full_logits(llama3_tokenizer, dataset, tmp_path, cpu_args):
    trainer = make_trainer(llama3_tokenizer, dataset, tmp_path, cpu_args, max_steps=2)
    calls = []
    trainer.model.lm_head.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    trainer.train()
    assert calls == []  # the fused head multiplies by `lm_head.weight` in chunks; the (B, T, V) logits never exist


def test_eval_is_deterministic_and_reports_split_losses(llama3_tokenizer, dataset, tmp_path, cpu_args):
    args = DeRTaConfig(output_dir=str(tmp_path), per_device_eval_batch_size=4, **cpu_args)
    trainer = DeRTaTrainer(
        model=tiny_model(llama3_tokenizer),
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=llama3_tokenizer,
    )
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first["eval_loss"] == second["eval_loss"]
    assert first["eval_derta/rto_loss"] > 0 and first["eval_derta/mle_loss"] > 0
