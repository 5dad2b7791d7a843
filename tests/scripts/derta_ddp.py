"""Trains DeRTa for one SGD step and saves the weights; run on 1 process (batch 8) or 2 processes (batch 4 each)."""

import os
import sys

import torch
from datasets import Dataset

from hf_safety import DeRTaConfig, DeRTaTrainer
from hf_safety.scripts import end_run
from hf_safety.toy import build_tokenizer, tiny_model


sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from testing_utils import toy_corpus, toy_rows  # noqa: E402


def main(output_dir: str, per_device_batch: int) -> None:
    tokenizer = build_tokenizer(toy_corpus())
    rows = toy_rows()
    harmful, benign = [r for r in rows if r["rejected"]][:4], [r for r in rows if not r["rejected"]][:4]
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in harmful + benign])
    args = DeRTaConfig(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        max_steps=1,
        per_device_train_batch_size=per_device_batch,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        rto_weight=0.5,
        gradient_checkpointing=False,
    )
    trainer = DeRTaTrainer(model=tiny_model(tokenizer), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    if trainer.is_world_process_zero():
        torch.save({n: p.detach() for n, p in trainer.model.named_parameters()}, os.path.join(output_dir, "params.pt"))
    end_run(trainer)  # every rank together (rank 0 has just saved alone): no abort at interpreter exit


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
