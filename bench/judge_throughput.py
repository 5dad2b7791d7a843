"""
Judge throughput: batched vs one-by-one judging of the same (prompt, response) pairs with a model judge.

Run (CPU, offline; about 3 minutes on 2 cores with the defaults, most of it in the one-by-one passes):

    HF_HUB_OFFLINE=1 /work/venv/bin/python bench/judge_throughput.py

The decode-bound case (a small judge writing a WildGuard-length answer, where per-step overhead dominates, as for
batch-1 decoding on a GPU); result in `bench/results/judge_throughput_decode_bound.json`:

    HF_HUB_OFFLINE=1 /work/venv/bin/python bench/judge_throughput.py --hidden-size 64 --layers 2 \
        --max-new-tokens 24 --batch-size 32 --inputs 128 --rounds 2 \
        --output bench/results/judge_throughput_decode_bound.json

Measured on 2 CPU cores: 7.5x in the decode-bound case, 1.8x with the defaults (hidden 256, 8 new tokens), where
the 250-token prompt's forward pass is compute-bound on the CPU even at batch size 1, so batching has little to
amortise. The >= 5x target holds in the first case only; on a GPU (not measured here) batch-1 judging is latency-bound.

On a GPU, time a real checkpoint (verdicts/s of `meta-llama/Llama-Guard-3-8B`, gated: needs a Hub login or a local
copy):

    /work/venv/bin/python bench/judge_throughput.py --model meta-llama/Llama-Guard-3-8B --dtype bfloat16 \\
        --batch-size 32 --inputs 512 --max-new-tokens 64 --output bench/results/judge_throughput_lg3_8b.json

Options: `--inputs` (pairs judged per pass), `--rounds` / `--warmup-rounds`, `--batch-size` (batched mode; the other
mode uses 1), `--max-new-tokens`, `--hidden-size` / `--layers` / `--heads` (the tiny judge), `--threads`,
`--model` / `--dtype` / `--load-in-4bit` / `--device-map` (a real judge), `--seed`, `--output` (JSON path, default
`bench/results/judge_throughput.json`).

What is compared. Without `--model`, a [`LlamaGuardJudge`] runs on a tiny-but-not-trivial Llama built from config
(hidden 256, 4 layers by default, random weights) with a local byte-level BPE tokenizer trained on the toy world's
texts and the Llama Guard prompt, so a judge input is a few hundred tokens as with the real prompt. The pairs are the
toy safety rows (harmful and benign requests with refusals and harmful answers), cycled to `--inputs`. Random weights
never emit end-of-sequence, so every pair decodes exactly `--max-new-tokens` tokens (default 8: a real Llama Guard
answer, `\\n\\nunsafe\\nS1,S10<|eot_id|>`, is about that long). Each round judges all pairs once batched
(`batch_size=--batch-size`, left-padded, longest first) and once one-by-one (`batch_size=1`), in alternating order,
after warm-up rounds; the headline ratio is the median one-by-one time over the median batched time (target >= 5x).
Verdicts of both modes are compared (raw text and `unsafe`); mismatches are counted and reported.
"""

from __future__ import annotations

import os
import sys


os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_env import device_info, versions, write_result  # noqa: E402


# the fixed toy rows of the test suite (tests/testing_utils.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


TARGET = 5.0
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "judge_throughput.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--inputs", type=int, default=200, help="(prompt, response) pairs judged per pass")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (each: one batched + one single pass)")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="unmeasured rounds first (on 16 pairs)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of the batched mode")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 8 (tiny judge), 64 (--model)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--model", default=None, help="a real Llama Guard checkpoint (Hub id or folder)")
    parser.add_argument("--version", type=int, default=3, help="Llama Guard version of --model")
    parser.add_argument("--dtype", default="auto", help="dtype of --model (auto, bfloat16, float16, float32)")
    parser.add_argument("--load-in-4bit", action="store_true", help="load --model in 4-bit NF4")
    parser.add_argument("--device-map", default=None, help="device_map of --model (default: auto on CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    return parser.parse_args(argv)


def pairs(count: int) -> tuple[list[str], list[str]]:
    """`count` (prompt, response) pairs from the toy rows: each harmful request with its refusal and its harmful
    answer, each benign request with its answer, cycled."""
    from testing_utils import toy_rows

    base = []
    for row in toy_rows():
        prompt = row["prompt"][-1]["content"]
        base.append((prompt, row["chosen"][-1]["content"]))
        if row.get("rejected"):
            base.append((prompt, row["rejected"][-1]["content"]))
    chosen = [base[i % len(base)] for i in range(count)]
    return [p for p, _ in chosen], [r for _, r in chosen]


def build_judge(args: argparse.Namespace):
    import torch
    from testing_utils import toy_corpus

    from hf_safety.judges import LlamaGuardJudge
    from hf_safety.judges.llama_guard import render_llama_guard_prompt
    from hf_safety.toy import build_tokenizer, tiny_model

    if args.model:
        dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
        return LlamaGuardJudge(
            args.model,
            version=args.version,
            max_new_tokens=args.max_new_tokens or 64,
            dtype=dtype,
            load_in_4bit=args.load_in_4bit,
            device_map=args.device_map,
        )
    corpus = [*toy_corpus(), render_llama_guard_prompt([{"role": "user", "content": "q"}], version=3)]
    tokenizer = build_tokenizer(corpus, chat_format="llama3", model="bpe", vocab_size=2000)
    model = tiny_model(
        tokenizer,
        "llama",
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        max_position_embeddings=2048,
    )
    if torch.cuda.is_available():
        model = model.cuda()
    return LlamaGuardJudge(model, tokenizer, version=3, max_new_tokens=args.max_new_tokens or 8)


def timed(judge, batch_size: int, prompts: list[str], responses: list[str]):
    import torch

    judge.batch_size = batch_size
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    verdicts = judge(prompts, responses)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, verdicts


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    judge = build_judge(args)
    prompts, responses = pairs(args.inputs)
    lengths = [
        len(judge.tokenizer(judge.build_prompt(p, r), add_special_tokens=False)["input_ids"])
        for p, r in zip(prompts, responses)
    ]
    print(f"judge: {judge.description}")
    print(
        f"{len(prompts)} pairs, judge input {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f})"
    )

    for _ in range(args.warmup_rounds):
        timed(judge, args.batch_size, prompts[:16], responses[:16])
        timed(judge, 1, prompts[:4], responses[:4])

    times: dict[str, list[float]] = {"batched": [], "single": []}
    mismatches, last = 0, {}
    for round_index in range(args.rounds):
        order = ("batched", "single") if round_index % 2 == 0 else ("single", "batched")
        for mode in order:
            seconds, verdicts = timed(judge, args.batch_size if mode == "batched" else 1, prompts, responses)
            times[mode].append(seconds)
            last[mode] = verdicts
            print(f"round {round_index}: {mode:7s} {seconds:7.2f} s ({len(prompts) / seconds:7.1f} verdicts/s)")
        mismatches += sum((b.raw, b.unsafe) != (s.raw, s.unsafe) for b, s in zip(last["batched"], last["single"]))

    median = {mode: statistics.median(values) for mode, values in times.items()}
    ratio = median["single"] / median["batched"]
    paired = statistics.median(s / b for s, b in zip(times["single"], times["batched"]))
    print(
        f"batched {len(prompts) / median['batched']:.1f} verdicts/s, one-by-one {len(prompts) / median['single']:.1f}"
    )
    print(
        f"speed-up (median single / median batched): {ratio:.2f}x (median paired ratio {paired:.2f}x), target >= "
        f"{TARGET}x: {'PASS' if ratio >= TARGET else 'FAIL'}; verdict mismatches: {mismatches}"
    )

    model = judge.model
    device = next(model.parameters()).device
    result = {
        "benchmark": "judge_throughput",
        "target_ratio": TARGET,
        "ratio": ratio,
        "paired_ratio_median": paired,
        "pass": ratio >= TARGET,
        "verdicts_per_s": {mode: len(prompts) / seconds for mode, seconds in median.items()},
        "seconds": times,
        "verdict_mismatches": mismatches,
        "judge": judge.description,
        "model": {
            "name": args.model or "tiny llama from config",
            "hidden_size": model.config.hidden_size,
            "num_hidden_layers": model.config.num_hidden_layers,
            "vocab_size": model.config.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": judge.quantization,
        },
        "inputs": {
            "pairs": len(prompts),
            "judge_input_tokens": {"min": min(lengths), "max": max(lengths), "mean": statistics.mean(lengths)},
            "max_new_tokens": judge.max_new_tokens,
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": device_info(device),
        "versions": versions(),
    }
    return write_result(args.output, result)


if __name__ == "__main__":
    main()
