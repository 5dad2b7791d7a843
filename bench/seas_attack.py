"""
SEAS attack-stage generation: batched (`num_return_sequences`, the package's generator) vs a per-sample loop.

Run (CPU, offline; 1-1.5 minutes on a shared 2-core host with the defaults, most of it in the naive loop):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/seas_attack.py

Measured there (one thread, hidden 256 / 4 layers, 16 seeds x 4 x 4, batch 16, 32 new tokens): batched / naive
6.2x for the red team's prompts (64 rows per call, 60-94-token seed prompts), 14.3x for the answers, 11.1x overall.

On a GPU, with a real checkpoint as both the red team and the target (SEAS starts both from the same base model):

    .venv/bin/python bench/seas_attack.py --model meta-llama/Meta-Llama-3-8B-Instruct --load-in-4bit \\
        --seeds 32 --n 4 --m 4 --batch-size 16 --max-new-tokens 128 --output bench/results/seas_attack_gpu.json

Options: `--seeds` (red-team inputs), `--n` (adversarial prompts per seed), `--m` (answers per adversarial prompt),
`--k` (example prompts per seed), `--batch-size` (prompts per batched `generate` call; each brings n or m rows),
`--max-new-tokens` (also the `min_new_tokens`), `--temperature` / `--top-p`, `--hidden-size` / `--layers` / `--heads`
(the tiny models), `--model` / `--dtype` / `--load-in-4bit` (a real checkpoint, loaded with
`hf_safety.models.load_model_and_tokenizer`), `--device` (auto, cpu, cuda; the tiny models only), `--threads`
(default 1: on a shared 2-core host two torch threads beside other jobs made batch-1 decoding 4x slower and erratic),
`--warmup`, `--seed`, `--output` (JSON path, default `bench/results/seas_attack_cpu.json`).

What is compared. The attack stage's two generations (`hf_safety.seas.run_attack_stage`, judge left out):

1. the red team writes `--n` adversarial prompts for each of `--seeds` seeds (seed prompts: the red team's
   instruction with `--k` example prompts of a harm topic, drawn from the toy SEAS world's seed pool);
2. the target answers each adversarial prompt `--m` times.

Batched: phase 1 is `hf_safety.seas.attack.write_adversarial_prompts`, phase 2 `hf_safety.generation.generate` with
`num_return_sequences=m`, exactly as `run_attack_stage` calls them (chat template, length-sorted left-padded batches of
`--batch-size` prompts, so `batch_size * n` rows per `model.generate` call). Naive: the released SEAS scripts'
approach of duplicating each row and generating it on its own: a Python loop over prompts and samples, one
`model.generate` call per (prompt, sample) at batch size 1 and `num_return_sequences=1`, with the same resolved
generation config (chat-templated ids, same stop/pad ids, same sampling settings), decoded and cleaned the same way.
Both modes start from the same seeds, and phase 2 of both answers the same adversarial prompts (those the batched
phase 1 wrote), so both decode the same number of tokens: sampling at T 0.8, top-p 0.9, with `min_new_tokens =
max_new_tokens`, so no row stops early (the generated token counts are checked and recorded).

Without `--model`, the red team and the target are two tiny-but-not-trivial Llamas built from config (hidden 256, 4
layers, random weights, different seeds) with a word-level Llama-3-style tokenizer over the toy SEAS world's texts.
Reported: adversarial prompts/s (phase 1), answers/s (phase 2), generations/s overall, generated tokens/s, and the
batched/naive ratio of each (target >= 5x, printed, not asserted).
"""

from __future__ import annotations

import os


os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_env import device_info, versions, write_result  # noqa: E402


TARGET = 5.0
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "seas_attack_cpu.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="red-team inputs (seed prompts)")
    parser.add_argument("--n", type=int, default=4, help="adversarial prompts written per seed")
    parser.add_argument("--m", type=int, default=4, help="target answers per adversarial prompt")
    parser.add_argument("--k", type=int, default=3, help="example prompts per seed")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per batched generate call")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per sample (min_new_tokens too)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--model", default=None, help="a real checkpoint (Hub id or folder) for both roles")
    parser.add_argument("--dtype", default="auto", help="dtype of --model (auto, bfloat16, float16, float32)")
    parser.add_argument("--load-in-4bit", action="store_true", help="load --model in 4-bit NF4 (GPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (tiny models; --model uses device_map)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU; 0: torch's default)")
    parser.add_argument("--warmup", type=int, default=2, help="seeds of the unmeasured warm-up pass of each mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    return parser.parse_args(argv)


def build_models(args: argparse.Namespace, corpus: list[str]):
    """`(red_model, red_tokenizer), (target_model, target_tokenizer), description`."""
    import torch

    from hf_safety.models import load_model_and_tokenizer
    from hf_safety.toy import build_tokenizer, tiny_model

    if args.model:
        dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
        device_map = None if args.device == "auto" else args.device
        model, tokenizer = load_model_and_tokenizer(
            args.model, dtype=dtype, device_map=device_map, load_in_4bit=args.load_in_4bit
        )
        return (model, tokenizer), (model, tokenizer), f"{args.model} (red team and target)"
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = build_tokenizer(corpus, chat_format="llama3", model="word")
    sizes = dict(hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=args.heads)
    red = tiny_model(tokenizer, "llama", seed=args.seed, **sizes).to(device)
    target = tiny_model(tokenizer, "llama", seed=args.seed + 1, **sizes).to(device)
    return (red, tokenizer), (target, tokenizer), "two tiny llamas from config (random weights)"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def batched_red_team(model, tokenizer, seeds, n, config, batch_size, seed):
    """Phase 1 as `run_attack_stage` runs it. Returns (per-seed cleaned prompts, generated token counts, settings)."""
    from hf_safety.seas.attack import AttackStats, write_adversarial_prompts

    stats = AttackStats(num_seeds=len(seeds))
    prompts = write_adversarial_prompts(
        model, tokenizer, seeds, n, config, batch_size=batch_size, seed=seed, stats=stats
    )
    return prompts, stats


def batched_target(model, tokenizer, prompts, m, config, batch_size, seed):
    """Phase 2 as `run_attack_stage` runs it (`generate` with `num_return_sequences=m` on the chat-templated ids)."""
    from hf_safety.generation import encode_prompt, generate

    inputs = [encode_prompt(tokenizer, prompt).input_ids for prompt in prompts]
    return generate(
        model, tokenizer, inputs, config, batch_size=batch_size, num_return_sequences=m, seed=seed, desc="target"
    )


def naive(model, tokenizer, prompts, samples, config, seed, clean: bool):
    """One `model.generate` call per (prompt, sample), batch size 1, `num_return_sequences=1` (the released scripts'
    duplicated rows). Returns (texts[i][j], generated token counts before the stop cut)."""
    import torch

    from hf_safety.generation import _as_list, encode_prompt, resolve_generation_config
    from hf_safety.seas.seeds import clean_adversarial_prompt

    single, _ = resolve_generation_config(model, tokenizer, config, num_return_sequences=1)
    stops = set(_as_list(single.eos_token_id))
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    texts, counts = [], []
    was_training = model.training
    model.eval()
    try:
        for prompt in prompts:
            ids = torch.tensor([encode_prompt(tokenizer, prompt).input_ids], dtype=torch.long, device=device)
            row = []
            for _ in range(samples):
                with torch.no_grad():
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=single)
                generated = out[0, ids.shape[1] :].tolist()
                counts.append(len(generated))
                end = next((j for j, t in enumerate(generated) if t in stops), len(generated))
                text = tokenizer.decode(generated[:end], skip_special_tokens=True)
                row.append(clean_adversarial_prompt(text) if clean else text)
            texts.append(row)
    finally:
        model.train(was_training)
    return texts, counts


def timed(fn, *args):
    sync()
    start = time.perf_counter()
    out = fn(*args)
    sync()
    return time.perf_counter() - start, out


def lengths(tokenizer, prompts) -> dict:
    from hf_safety.generation import encode_prompt

    values = [len(encode_prompt(tokenizer, p).input_ids) for p in prompts]
    return {"min": min(values), "max": max(values), "mean": statistics.mean(values)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import GenerationConfig

    from hf_safety.seas import SeedPool
    from hf_safety.toy.seas import SEASToyWorld

    if args.threads:
        torch.set_num_threads(args.threads)
    # the resolved config carries transformers' default min_length=0 beside min_new_tokens, and every generate call
    # would warn that min_new_tokens takes precedence
    transformers.logging.set_verbosity_error()
    world = SEASToyWorld(seed=args.seed)
    seeds = SeedPool(world.seed_pool(), args.k).sample(args.seeds + args.warmup, seed=args.seed)
    warm_seeds, seeds = seeds[: args.warmup], seeds[args.warmup :]
    (red, red_tok), (target, target_tok), description = build_models(args, world.corpus(max_k=args.k))
    config = GenerationConfig(
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
    )
    seed_prompts = [s.prompt for s in seeds]
    print(f"models: {description}; device {next(red.parameters()).device}, threads {torch.get_num_threads()}")
    print(
        f"{len(seeds)} seeds x n={args.n} prompts, then x m={args.m} answers; batch {args.batch_size} prompts; "
        f"{args.max_new_tokens} new tokens per sample (min = max); T {args.temperature}, top-p {args.top_p}"
    )

    # warm-up (unmeasured): both modes, both models
    if warm_seeds:
        warm, _ = batched_red_team(red, red_tok, warm_seeds, args.n, config, args.batch_size, args.seed)
        warm_prompts = [p for ps in warm for p in ps][:2] or ["hello"]
        batched_target(target, target_tok, warm_prompts, args.m, config, args.batch_size, args.seed)
        naive(red, red_tok, [warm_seeds[0].prompt], 1, config, args.seed, clean=True)
        naive(target, target_tok, warm_prompts[:1], 1, config, args.seed, clean=False)

    seconds: dict[str, dict[str, float]] = {"batched": {}, "naive": {}}
    tokens: dict[str, dict[str, int]] = {"batched": {}, "naive": {}}

    # phase 1: the red team writes n prompts per seed (same seeds in both modes)
    seconds["batched"]["red_team"], (per_seed, stats) = timed(
        batched_red_team, red, red_tok, seeds, args.n, config, args.batch_size, args.seed
    )
    red_settings = stats.settings["red_team"]
    # write_adversarial_prompts returns texts only: min_new_tokens = max_new_tokens fixes the count (as the target
    # phase's measured counts confirm)
    tokens["batched"]["red_team"] = stats.num_generated_prompts * args.max_new_tokens
    print(f"batched red team: {seconds['batched']['red_team']:7.2f} s")
    seconds["naive"]["red_team"], (naive_prompts, naive_red_counts) = timed(
        naive, red, red_tok, seed_prompts, args.n, config, args.seed, True
    )
    tokens["naive"]["red_team"] = sum(naive_red_counts)
    print(f"naive red team:   {seconds['naive']['red_team']:7.2f} s")

    # phase 2: the target answers each adversarial prompt m times (the batched phase's prompts, in both modes)
    prompts = [p for ps in per_seed for p in ps]
    if not prompts:
        raise SystemExit("the red team wrote no usable prompt; nothing to answer")
    seconds["batched"]["target"], answers = timed(
        batched_target, target, target_tok, prompts, args.m, config, args.batch_size, args.seed + 1
    )
    batched_answer_counts = [len(s.token_ids) for row in answers.samples for s in row]
    finish = {}
    for row in answers.samples:
        for s in row:
            finish[s.finish_reason] = finish.get(s.finish_reason, 0) + 1
    tokens["batched"]["target"] = sum(batched_answer_counts)  # measured (cut before a stop token, if any)
    print(f"batched target:   {seconds['batched']['target']:7.2f} s")
    seconds["naive"]["target"], (_, naive_target_counts) = timed(
        naive, target, target_tok, prompts, args.m, config, args.seed + 1, False
    )
    tokens["naive"]["target"] = sum(naive_target_counts)
    print(f"naive target:     {seconds['naive']['target']:7.2f} s")

    for mode in seconds:
        seconds[mode]["total"] = seconds[mode]["red_team"] + seconds[mode]["target"]
        tokens[mode]["total"] = tokens[mode]["red_team"] + tokens[mode]["target"]
    counts = {"red_team": stats.num_generated_prompts, "target": len(prompts) * args.m}
    counts["total"] = counts["red_team"] + counts["target"]
    per_s = {mode: {phase: counts[phase] / seconds[mode][phase] for phase in counts} for mode in seconds}
    tokens_per_s = {mode: {phase: tokens[mode][phase] / seconds[mode][phase] for phase in counts} for mode in seconds}
    ratio = {phase: seconds["naive"][phase] / seconds["batched"][phase] for phase in counts}
    same_tokens = tokens["batched"] == tokens["naive"] and set(batched_answer_counts) <= {args.max_new_tokens}
    labels = {"red_team": "adversarial prompts/s", "target": "answers/s", "total": "generations/s"}
    for phase, label in labels.items():
        print(
            f"{phase:8s}: batched {per_s['batched'][phase]:8.2f} {label}, naive {per_s['naive'][phase]:7.2f} -> "
            f"{ratio[phase]:5.2f}x (target >= {TARGET}x: {'met' if ratio[phase] >= TARGET else 'NOT met'})"
        )
    print(f"generated tokens batched {tokens['batched']}, naive {tokens['naive']}; equal: {same_tokens}")

    device = next(red.parameters()).device
    result = {
        "benchmark": "seas_attack",
        "target_ratio": TARGET,
        "ratio": ratio,
        "target_met": {phase: r >= TARGET for phase, r in ratio.items()},
        "per_s": per_s,
        "generated_tokens_per_s": tokens_per_s,
        "seconds": seconds,
        "generated_tokens": tokens,
        "generated_tokens_equal": same_tokens,
        "models": {
            "description": description,
            "name": args.model or "tiny llama from config",
            "hidden_size": red.config.hidden_size,
            "num_hidden_layers": red.config.num_hidden_layers,
            "vocab_size": red.config.vocab_size,
            "parameters": sum(p.numel() for p in red.parameters()),
            "dtype": str(next(red.parameters()).dtype),
            "load_in_4bit": args.load_in_4bit,
        },
        "shapes": {
            "seeds": len(seeds),
            "n": args.n,
            "m": args.m,
            "k": args.k,
            "generated_prompts": stats.num_generated_prompts,
            "adversarial_prompts_kept": len(prompts),
            "dropped_empty": stats.num_dropped_empty,
            "dropped_length": stats.num_dropped_length,
            "naive_prompts_kept": sum(bool(p) for row in naive_prompts for p in row),
            "answers": counts["target"],
            "red_team_input_tokens": lengths(red_tok, seed_prompts),
            "target_input_tokens": lengths(target_tok, prompts),
            "max_new_tokens": args.max_new_tokens,
            "batched_rows_per_call": {"red_team": args.batch_size * args.n, "target": args.batch_size * args.m},
            "generate_calls": {
                "batched": {
                    "red_team": -(-len(seeds) // args.batch_size),
                    "target": -(-len(prompts) // args.batch_size),
                },
                "naive": {"red_team": len(seeds) * args.n, "target": len(prompts) * args.m},
            },
            "answer_finish_reasons": finish,
        },
        "generation_settings": {"red_team": red_settings, "target": answers.settings},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": device_info(device),
        "versions": versions(),
    }
    return write_result(args.output, result)


if __name__ == "__main__":
    main()
