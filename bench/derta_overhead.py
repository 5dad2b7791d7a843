"""
DeRTa step overhead against a plain `SFTTrainer` step, per trained token, on the same tokens and the same model.

Run (CPU, offline; about 2 minutes on 2 cores with the defaults):

    HF_HUB_OFFLINE=1 /work/venv/bin/python bench/derta_overhead.py

Options: `--steps` (distinct batches per round), `--rounds`, `--warmup-rounds`, `--batch-size` (preference rows per
DeRTa batch), `--hidden-size`, `--layers`, `--heads`, `--threads`, `--replicate` (copies of the toy train split),
`--seed`, `--output` (JSON path, default `bench/results/derta_overhead.json`), `--profile` (after the measurement,
cProfile `--rounds` more interleaved rounds of each trainer and print the top entries; also stored in the JSON).

What is compared. A `DeRTaTrainer` is built on the toy safety data (`hf_safety.toy`) and a tiny-but-not-trivial
Llama (hidden 256, 4 layers by default). Its collator turns each batch of preference rows into harmful-prefix, RTO
and benign sequences; those exact sequences (`input_ids` + `labels`, unpadded) become the pre-tokenized train set of a
plain `trl.SFTTrainer` on an identically initialised copy of the model, grouped into the same batches. Both trainers
then run the same steps, interleaved (DeRTa/SFT order alternating per step and round), after warm-up rounds. One step
is timed in four parts, each as the `Trainer` loop does it:

- `fetch`: `Dataset.__getitems__` of the batch's rows (DeRTa: the tokenized preference rows; SFT: the sequences),
- `collate`: the trainer's `data_collator` (DeRTa builds the sequences here; SFT only pads pre-built ones),
- `fwd_bwd`: `Trainer._get_num_items_in_batch` + `trainer.training_step` (`compute_loss`, metrics, backward),
- `optim`: gradient clipping, `optimizer.step()`, `lr_scheduler.step()`, `model.zero_grad()`.

The collated batches are checked to be identical (DeRTa's additionally carries `sequence_kind` and
`harmful_prefix_length`), so both trainers see the same input and labelled tokens and the same `num_items_in_batch`.
Each step's time is taken as its median over the rounds, summed over the steps and divided by the labelled tokens
(`labels[..., 1:] != -100`, as `Trainer` counts `num_items_in_batch`) or the input tokens (`attention_mask` sum); the
headline ratio is DeRTa / SFT of that per-labelled-token time. Per-step medians keep it robust to bursts of load from
outside (on a shared 2-core host another process can slow a whole round several-fold); the sum of per-step minima and
the median of the per-round paired ratios are reported beside it as cross-checks. Target: ratio <= 1.05.
"""

from __future__ import annotations

import os
import sys


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402


# the fixed toy rows of the test suite (tests/testing_utils.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


PARTS = ("fetch", "collate", "fwd_bwd", "optim")
EXTRA_KEYS = ("sequence_kind", "harmful_prefix_length")
TARGET = 1.05
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "derta_overhead.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="distinct batches (training steps) per round")
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds over the same batches")
    parser.add_argument("--warmup-rounds", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--batch-size", type=int, default=8, help="preference rows per DeRTa batch")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="checkpoint activations in both trainers, as `train()` does with TRL's default `gradient_checkpointing=True`"
        " (off by default: less compute per step, so a stricter test of DeRTa's overhead)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--replicate", type=int, default=0, help="copies of the toy train split (0: as many as needed)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    parser.add_argument(
        "--profile", action="store_true", help="after the measurement, cProfile --rounds interleaved rounds of both"
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace, workdir: str):
    """The DeRTa trainer, the SFT trainer on DeRTa's sequences, and the batches (row indices into each dataset)."""
    from datasets import Dataset, concatenate_datasets
    from testing_utils import toy_corpus, toy_safety_dataset
    from trl import SFTConfig, SFTTrainer

    from hf_safety import DeRTaConfig, DeRTaTrainer
    from hf_safety.toy import build_tokenizer, tiny_model

    tokenizer = build_tokenizer(toy_corpus(), "llama3", "word")
    model_kwargs = dict(hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=args.heads)
    common = dict(
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        logging_steps=10**9,
        activation_checkpointing=args.activation_checkpointing,
    )

    train = toy_safety_dataset()["train"]
    copies = args.replicate or max(1, -(-args.steps * args.batch_size // len(train)))
    train = concatenate_datasets([train] * copies)
    if len(train) < args.steps * args.batch_size:
        raise SystemExit(f"{len(train)} rows cannot fill {args.steps} batches of {args.batch_size}; raise --replicate")

    derta = DeRTaTrainer(
        model=tiny_model(tokenizer, "llama", seed=0, **model_kwargs),
        args=DeRTaConfig(output_dir=os.path.join(workdir, "derta"), **common),
        train_dataset=train,
        processing_class=tokenizer,
    )
    derta_rows = derta._remove_unused_columns(derta.train_dataset, description="training")
    derta_batches = [list(range(i * args.batch_size, (i + 1) * args.batch_size)) for i in range(args.steps)]

    # Record the sequences DeRTa's collator builds for each batch (draws of epoch 0, as in the timed rounds)
    derta.data_collator.set_epoch(0)
    reference, sequences, sft_batches = [], [], []
    for indices in derta_batches:
        batch = derta.data_collator(derta_rows.__getitems__(indices))
        reference.append(batch)
        start = len(sequences)
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            length = int(mask.sum())
            sequences.append({"input_ids": ids[:length].tolist(), "labels": labels[:length].tolist()})
        sft_batches.append(list(range(start, len(sequences))))

    sft = SFTTrainer(
        model=tiny_model(tokenizer, "llama", seed=0, **model_kwargs),
        args=SFTConfig(output_dir=os.path.join(workdir, "sft"), **common),
        train_dataset=Dataset.from_list(sequences),
        processing_class=tokenizer,
    )
    sft_rows = sft._remove_unused_columns(sft.train_dataset, description="training")
    if len(sft_rows) != len(sequences):
        raise RuntimeError(f"SFTTrainer kept {len(sft_rows)} of the {len(sequences)} DeRTa sequences")
    for indices, expected in zip(sft_batches, reference):
        check_same(sft.data_collator(sft_rows.__getitems__(indices)), expected, "SFT collator")

    for trainer in (derta, sft):
        if args.activation_checkpointing:  # what `Trainer.train()` does first; the steps here skip `train()`
            trainer.model.activation_checkpointing_enable()
        trainer.create_optimizer_and_scheduler(num_training_steps=args.steps * (args.rounds + args.warmup_rounds))
        trainer.current_gradient_accumulation_steps = 1
        trainer.model.train()
    tokens = [
        {
            "labelled": int((batch["labels"][..., 1:] != -100).sum()),
            "input": int(batch["attention_mask"].sum()),
            "padded": batch["input_ids"].numel(),
            "sequences": batch["input_ids"].shape[0],
        }
        for batch in reference
    ]
    return {
        "tokens": tokens,
        "tokenizer": tokenizer,
        "derta": (derta, derta_rows, derta_batches),
        "sft": (sft, sft_rows, sft_batches),
        "reference": reference,
    }


def check_same(batch, expected, what: str) -> None:
    import torch

    keys = set(expected) - set(EXTRA_KEYS)
    if set(batch) - set(EXTRA_KEYS) != keys:
        raise RuntimeError(f"{what}: keys {sorted(batch)} differ from {sorted(expected)}")
    for key in keys | (set(batch) & set(expected)):
        if not torch.equal(batch[key], expected[key]):
            raise RuntimeError(f"{what}: {key!r} differs from the recorded DeRTa batch")


def step(trainer, rows, indices, clock=time.perf_counter):
    """One training step as `Trainer`'s inner loop runs it; returns the batch and the time of each part."""
    t0 = clock()
    examples = rows.__getitems__(indices)
    t1 = clock()
    batch = trainer.data_collator(examples)
    t2 = clock()
    num_items_in_batch = trainer._get_num_items_in_batch([batch], trainer.args.device)
    trainer.training_step(trainer.model, dict(batch), num_items_in_batch)
    t3 = clock()
    if trainer.args.max_grad_norm > 0:
        trainer._clip_grad_norm(trainer.model)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    trainer.model.zero_grad()
    t4 = clock()
    return batch, num_items_in_batch, dict(zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


def measure(setup, args):
    """Runs the interleaved rounds; returns, per measured round, each step's parts for both trainers."""
    derta = setup["derta"][0]
    rounds = []
    for r in range(args.warmup_rounds + args.rounds):
        derta.data_collator.set_epoch(0)  # same draws every round: the recorded sequences
        gc.collect()
        steps = []
        for i in range(args.steps):
            order = ("derta", "sft") if (r + i) % 2 == 0 else ("sft", "derta")
            parts, items = {}, {}
            for name in order:
                trainer, rows, batches = setup[name]
                batch, num_items, parts[name] = step(trainer, rows, batches[i])
                check_same(batch, setup["reference"][i], name)
                items[name] = int(num_items)
            if items["derta"] != items["sft"] or items["sft"] != setup["tokens"][i]["labelled"]:
                raise RuntimeError(f"num_items_in_batch differs at step {i}: {items}")
            steps.append(parts)
        if r >= args.warmup_rounds:
            rounds.append(steps)
        label = "warmup" if r < args.warmup_rounds else f"round {r - args.warmup_rounds + 1}/{args.rounds}"
        d, s = (sum(sum(parts[name].values()) for parts in steps) for name in ("derta", "sft"))
        print(f"  {label:>12}: DeRTa {d:7.3f}s  SFT {s:7.3f}s  ratio {d / s:.3f}", flush=True)
    return rounds


def summarize(rounds, step_tokens):
    """
    Per-token times and DeRTa / SFT ratios. Headline: each step's time is its median over the rounds, summed over the
    steps and divided by the tokens (external load only ever adds time, and the per-step median ignores the steps it
    hit as long as they are under half). Also: the same with the minimum (timeit-style), and the median over rounds of
    the paired per-round ratio.
    """
    med = statistics.median
    n_steps = len(rounds[0])
    tokens = {key: sum(t[key] for t in step_tokens) for key in step_tokens[0]}

    def seconds(rd, i, name, part):
        parts = rd[i][name]
        return sum(parts.values()) if part == "total" else parts[part]

    summary = {"tokens_per_round": tokens, "per_labelled_token_us": {}, "per_input_token_us": {}, "ratio": {}}
    per_round_seconds = {}
    for name in ("derta", "sft"):
        per_part = {
            part: sum(med([seconds(rd, i, name, part) for rd in rounds]) for i in range(n_steps))
            for part in (*PARTS, "total")
        }
        per_round_seconds[name] = per_part
        summary["per_labelled_token_us"][name] = {k: v / tokens["labelled"] * 1e6 for k, v in per_part.items()}
        summary["per_input_token_us"][name] = {k: v / tokens["input"] * 1e6 for k, v in per_part.items()}
    summary["seconds_per_round"] = per_round_seconds
    for part in (*PARTS, "total"):
        summary["ratio"][part] = per_round_seconds["derta"][part] / per_round_seconds["sft"][part]
    model_step = {
        name: per_round_seconds[name]["fwd_bwd"] + per_round_seconds[name]["optim"] for name in ("derta", "sft")
    }
    summary["ratio"]["model_step_only"] = model_step["derta"] / model_step["sft"]

    minimum = {
        name: sum(min(seconds(rd, i, name, "total") for rd in rounds) for i in range(n_steps))
        for name in ("derta", "sft")
    }
    summary["ratio"]["total_min_per_step"] = minimum["derta"] / minimum["sft"]
    round_ratios = [
        sum(seconds(rd, i, "derta", "total") for i in range(n_steps))
        / sum(seconds(rd, i, "sft", "total") for i in range(n_steps))
        for rd in rounds
    ]
    summary["ratio"]["total_median_of_round_ratios"] = med(round_ratios)
    summary["round_ratio_range"] = [min(round_ratios), max(round_ratios)]
    # Rounds hit by a burst of load from outside (other processes on a shared host)
    summary["noisy_rounds"] = sum(abs(x / summary["ratio"]["total"] - 1) > 0.2 for x in round_ratios)
    return summary


def profile(setup, args, top: int = 25) -> dict[str, str]:
    """cProfile of both trainers' steps (interleaved like the measurement, `--rounds` rounds) to see where time goes."""
    profilers = {name: cProfile.Profile() for name in ("derta", "sft")}
    for r in range(args.rounds):
        setup["derta"][0].data_collator.set_epoch(0)
        for i in range(args.steps):
            for name in ("derta", "sft") if (r + i) % 2 == 0 else ("sft", "derta"):
                trainer, rows, batches = setup[name]
                profilers[name].enable()
                step(trainer, rows, batches[i])
                profilers[name].disable()
    reports = {}
    for name, profiler in profilers.items():
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        reports[name] = out.getvalue()
        print(f"\n===== cProfile: {name} ({args.rounds} x {args.steps} steps), sorted by tottime =====")
        print(reports[name])
    return reports


def main(argv=None) -> dict:
    args = parse_args(argv)
    import datasets
    import torch
    import transformers
    import trl

    from hf_safety.derta.collator import HARMFUL_PREFIX, RTO

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t_setup = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        setup = build(args, workdir)
        model = setup["derta"][0].model
        n_params = sum(p.numel() for p in model.parameters())
        kinds = torch.cat([batch["sequence_kind"] for batch in setup["reference"]])
        print(
            f"model: Llama hidden={args.hidden_size} layers={args.layers} heads={args.heads} "
            f"vocab={model.config.vocab_size}, {n_params / 1e6:.2f}M params, activation checkpointing "
            f"{'on' if model.is_activation_checkpointing else 'off'}; threads={torch.get_num_threads()}; "
            f"{args.steps} steps x {args.batch_size} rows -> {len(kinds)} sequences "
            f"({int((kinds == HARMFUL_PREFIX).sum())} harmful-prefix, {int((kinds == RTO).sum())} RTO); "
            f"setup {time.perf_counter() - t_setup:.1f}s",
            flush=True,
        )
        t_measure = time.perf_counter()
        rounds = measure(setup, args)
        measure_seconds = time.perf_counter() - t_measure
        summary = summarize(rounds, setup["tokens"])
        reports = profile(setup, args) if args.profile else None

    tok = summary["tokens_per_round"]
    print(
        f"\nper round: {tok['labelled']} labelled tokens, {tok['input']} input tokens "
        f"({tok['padded']} with padding), {tok['sequences']} sequences, {args.steps} steps; each step's median of {args.rounds} rounds"
    )
    header = f"{'part':<10}{'DeRTa us/lbl tok':>18}{'SFT us/lbl tok':>16}{'DeRTa us/in tok':>17}{'SFT us/in tok':>15}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    lbl, inp = summary["per_labelled_token_us"], summary["per_input_token_us"]
    for part in (*PARTS, "total"):
        print(
            f"{part:<10}{lbl['derta'][part]:>18.2f}{lbl['sft'][part]:>16.2f}"
            f"{inp['derta'][part]:>17.2f}{inp['sft'][part]:>15.2f}{summary['ratio'][part]:>8.3f}"
        )
    ratio = summary["ratio"]["total"]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    low, high = summary["round_ratio_range"]
    print(
        f"\nDeRTa / SFT time per trained token: {ratio:.3f}x -> {verdict} (target <= {TARGET:.2f}x)\n"
        f"  model step only (fwd_bwd + optim): {summary['ratio']['model_step_only']:.3f}x; "
        f"sum of per-step minima: {summary['ratio']['total_min_per_step']:.3f}x; "
        f"median of per-round ratios: {summary['ratio']['total_median_of_round_ratios']:.3f}x "
        f"(range {low:.3f}..{high:.3f}, {summary['noisy_rounds']} of {args.rounds} rounds off by >20%)"
    )

    result = {
        "benchmark": "derta_overhead",
        "target_ratio": TARGET,
        "ratio_per_trained_token": ratio,
        "pass": ratio <= TARGET,
        "device": {
            "type": "cpu",
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "datasets": datasets.__version__,
        },
        "model": {
            "architecture": "llama",
            "hidden_size": args.hidden_size,
            "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads,
            "vocab_size": model.config.vocab_size,
            "parameters": n_params,
            "activation_checkpointing": model.is_activation_checkpointing,
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "measure_seconds": measure_seconds,
        **summary,
        "step_tokens": setup["tokens"],
        "rounds": rounds,
    }
    if reports:
        result["profile"] = reports
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
