"""
Prefix groups on ShieldGemma: each (prompt, response) pair is judged once per principle, and the principle comes after
the conversation, so a pair's inputs share everything up to it. Side by side in one run on the same pairs, score-only:

- `no-prefix`: every input computed whole (`shared_prefix=False`);
- `call-prefix`: the preamble every input shares, cached once (`prefix_groups=False`);
- `groups`: the default judge: the preamble, and each pair's conversation once per batch.

Run (CPU, offline, about a minute on 2 cores):

    HF_HUB_OFFLINE=1 /work/main/.venv/bin/python bench/shieldgemma_groups.py --threads 1

A random Gemma 2 (ShieldGemma's architecture, tiny: `--hidden-size`, `--layers`) with a byte-level BPE tokenizer trained
on the toy world's texts and ShieldGemma's prompt, judging the toy pairs (`judge_throughput.pairs`) against the four
default principles. Random weights give arbitrary P(Yes), which is all the score path reads; every setting's scores are
compared with `no-prefix`'s. Figures: verdicts/s (medians over `--rounds`), and the tokens each setting computes
(rows x length of every forward pass, padding included). Output: `bench/results/shieldgemma_groups.json`.

Measured on 2 CPU cores, `--threads 1`, defaults (hidden 256, 4 layers; 100 toy pairs x 4 principles, inputs of
125-180 tokens, 27 shared by all, ~45 more by a pair's four inputs; verdicts/s, tokens computed):

    setting        batch 1             batch 16
    no-prefix      13.7   58,360       14.9   58,848
    call-prefix    15.5   47,587       18.4   48,075
    groups         16.2   34,267       18.6   45,567

Groups compute 28% fewer tokens than the call prefix alone at batch size 1 but run only 1.04x faster on this tiny
model (one more forward pass per pair: per-pass overhead, not tokens, dominates a 4-layer 256-wide model on CPU);
batched, a pair's four principles (60-102 tokens after the conversation) pad to the longest, and groups save 5% of the
tokens and no time (1.01x). The toy conversations are short (~45 tokens); SEAS's answers run to 256 tokens, where the
conversation is most of each input. Scores equal no-prefix's within 2e-7 in every setting.
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


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "shieldgemma_groups.json"
SETTINGS = {
    "no-prefix": {"shared_prefix": False},
    "call-prefix": {"shared_prefix": True, "prefix_groups": False},
    "groups": {"shared_prefix": True, "prefix_groups": True},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100, help="(prompt, response) pairs, each judged per principle")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of the batched passes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    from judge_throughput import pairs
    from testing_utils import ForwardShapes, tiny_gemma2, toy_corpus

    from hf_safety.judges import ShieldGemmaJudge
    from hf_safety.judges.shieldgemma import SHIELDGEMMA_HARM_TYPES, render_shieldgemma_prompt, shieldgemma_guideline
    from hf_safety.toy import build_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    corpus = [render_shieldgemma_prompt("q", "a", shieldgemma_guideline(k)) for k in SHIELDGEMMA_HARM_TYPES]
    tokenizer = build_tokenizer([*corpus, *toy_corpus()], chat_format="mistral", model="bpe", vocab_size=2000)
    tokenizer.add_tokens(["Yes", "No"])
    model = tiny_gemma2(
        tokenizer,
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=args.hidden_size // 4,
    ).to(device)
    prompts, responses = pairs(args.inputs)
    judges = {
        (name, batch_size): ShieldGemmaJudge(model, tokenizer, batch_size=batch_size, **settings)
        for name, settings in SETTINGS.items()
        for batch_size in (1, args.batch_size)
    }
    some = next(iter(judges.values()))
    texts = [some.build_prompt(p, r, g) for p, r in zip(prompts, responses) for g in some.guidelines.values()]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    print(
        f"{len(prompts)} pairs x {len(some.guidelines)} principles, judge inputs {min(lengths)}-{max(lengths)} tokens"
    )

    times = {key: [] for key in judges}
    tokens, verdicts = {}, {}
    for key, judge in judges.items():  # warm-up, token counts and verdicts
        with ForwardShapes(model) as shapes:
            verdicts[key] = judge(prompts, responses)
        tokens[key] = sum(rows * length for rows, length in shapes)
    keys = list(judges)
    for round_index in range(args.rounds):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            judge = judges[key]
            judge(prompts, responses)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
            print(f"round {round_index}: {key[0]:12s} batch {key[1]:3d} {times[key][-1]:6.2f} s")
    median = {key: statistics.median(values) for key, values in times.items()}
    reference = verdicts["no-prefix", 1]
    modes = {
        f"{name}@{batch_size}": {
            "setting": name,
            "batch_size": batch_size,
            "verdicts_per_s": len(prompts) / median[name, batch_size],
            "seconds": times[name, batch_size],
            "tokens_computed": tokens[name, batch_size],
            "verdict_mismatches": sum(a.unsafe is not b.unsafe for a, b in zip(verdicts[name, batch_size], reference)),
            "max_score_diff": max(abs(a.score - b.score) for a, b in zip(verdicts[name, batch_size], reference)),
        }
        for name, batch_size in keys
    }
    ratios = {
        f"groups_vs_{base}_at_batch_{b}": median[base, b] / median["groups", b]
        for base in ("no-prefix", "call-prefix")
        for b in (1, args.batch_size)
    }
    print(f"\n{'setting':12s} {'batch':>5s} {'verdicts/s':>11s} {'tokens':>9s}  mismatches (max score diff)")
    for mode in modes.values():
        print(
            f"{mode['setting']:12s} {mode['batch_size']:5d} {mode['verdicts_per_s']:11.1f} {mode['tokens_computed']:9d}"
            f"  {mode['verdict_mismatches']} ({mode['max_score_diff']:.1e})"
        )
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x")
    return write_result(
        args.output,
        {
            "benchmark": "shieldgemma_groups",
            "ratios": ratios,
            "modes": modes,
            "judge": some.description,
            "model": {
                "name": "tiny Gemma 2 from config (random weights)",
                "hidden_size": model.config.hidden_size,
                "num_hidden_layers": model.config.num_hidden_layers,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "inputs": {
                "pairs": len(prompts),
                "principles": len(some.guidelines),
                "judge_input_tokens": {"min": min(lengths), "max": max(lengths), "mean": statistics.mean(lengths)},
            },
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "device": device_info(device),
            "versions": versions(),
        },
    )


if __name__ == "__main__":
    main()
