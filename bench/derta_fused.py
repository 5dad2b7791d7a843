"""
DeRTa's fused form, padded and padding-free, against its naive form (time per harmful row, peak memory) and against a
plain SFT step (time per trained token), on the same rows, the same sampled prefix lengths and identically initialised
models.

Run (CPU, offline; a few minutes on 2 cores with the defaults):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/derta_fused.py

On a GPU, with the shape-true Llama 3 8B (random weights, nothing downloaded) in bitsandbytes 4-bit + LoRA:

    python bench/derta_fused.py --device cuda --model-config recipes/configs/meta-llama--Meta-Llama-3-8B-Instruct \\
        --load-in-4bit --activation-checkpointing

Options: `--steps` (distinct batches per round), `--rounds`, `--warmup-rounds`, `--harmful-rows` and `--benign-rows`
(rows per micro-batch), `--prompt-tokens`, `--harmful-tokens`, `--safe-tokens` (lengths of the synthetic rows; benign
answers are `--safe-tokens` long), `--vocab` (words of the generated vocabulary), `--hidden-size`, `--layers`,
`--heads` (the small Llama, when no `--model-config`), `--model-config DIR` (a `config.json` folder; `--layers` then
cuts its depth when given), `--load-in-4bit` (NF4 + double quantization via bitsandbytes, LoRA r=16 on all linear
layers, the model built by `bench/qlora_gpu.py`'s `build_qlora_model`), `--activation-checkpointing`, `--device`,
`--threads`, `--seed`, `--no-memory` (skip the memory subprocesses), `--output` (JSON path, default
`bench/results/derta_fused_<device>.json`).

What is compared. Synthetic pre-tokenized rows (random words of a generated vocabulary, through
`hf_safety.toy.build_tokenizer`'s word-level tokenizer): each micro-batch has `--harmful-rows` harmful rows (prompt,
harmful answer, safe answer) and `--benign-rows` benign rows (prompt, answer). Four trainers on identically
initialised models:

- `naive`: `DeRTaTrainer(derta_form="naive")`: per harmful row, `P h1..hk S` (harmful-prefix MLE) and `P H` (RTO);
- `fused`: `DeRTaTrainer(derta_form="fused")`: per harmful row one tree-masked sequence `P H x S` (4-D mask);
- `fused_padding_free`: the same with `padding_free=True`: the batch's sequences in one row, no padding (one 4-D
  mask for the row, block-diagonal over the sequences);
- `sft`: as in `bench/derta_overhead.py`, a plain `trl.SFTTrainer` on exactly the sequences the naive collator builds
  (`input_ids` + `labels`, unpadded, grouped into the same batches): the same trained (labelled) tokens as both DeRTa
  forms, trained as ordinary SFT sequences.

The DeRTa collators draw `k` from the same seed and row indices (checked: the fused batches' prefix lengths are the
naive batch's), and the arms' losses on the first benched batch are computed with the same model and recorded
(`loss_check`; equal to float32 round-off). One step is timed as `bench/derta_overhead.py`'s `step` does it (fetch,
collate, `training_step`, optimizer), the three trainers interleaved (order rotating per step and round) after warm-up
rounds; each step's time is its median over the rounds, summed over the steps. Reported: time per harmful row (the
round's time / harmful rows in it; the benign rows' cost is included, as in training), `fused / naive` and
`fused_padding_free / naive` of it, and each arm over `sft` per labelled token (`labels[..., 1:] != -100`, the same count for all three). The sum
of per-step minima and the median of per-round ratios are kept beside the medians as cross-checks.

Peak memory is measured per DeRTa arm in its own subprocess (so one form's peak does not hide the other's), over
`--warmup-rounds` + 2 rounds of the same steps: on CPU the peak RSS over the steps (`VmHWM`, reset before the first
step) and its rise over the RSS before the first step; on CUDA `torch.cuda.max_memory_allocated` (reset once the
trainer is built).

Targets (issue 13), for both fused arms: <= 0.75x naive time per harmful row; <= 1.05x SFT per trained token; peak
memory <= naive.
"""

from __future__ import annotations

import os
import sys


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402


BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # this checkout's hf_safety, installed or not
sys.path.insert(0, str(BENCH))  # the other benches' helpers

# The DeRTa arms: the trainer settings of each
ARMS = {
    "naive": {"derta_form": "naive"},
    "fused": {"derta_form": "fused"},
    "fused_padding_free": {"derta_form": "fused", "padding_free": True},
}
FORMS = tuple(ARMS)
TRAINERS = (*FORMS, "sft")
TARGETS = {
    "fused_over_naive_per_harmful_row": 0.75,
    "fused_padding_free_over_naive_per_harmful_row": 0.75,
    "fused_over_sft_per_trained_token": 1.05,
    "fused_padding_free_over_sft_per_trained_token": 1.05,
}
# Ratios reported: name -> (numerator, denominator); per harmful row and per trained token are the same ratio, as
# every arm trains the same rows and tokens
RATIOS = {
    "fused_over_naive_per_harmful_row": ("fused", "naive"),
    "fused_padding_free_over_naive_per_harmful_row": ("fused_padding_free", "naive"),
    "fused_over_sft_per_trained_token": ("fused", "sft"),
    "fused_padding_free_over_sft_per_trained_token": ("fused_padding_free", "sft"),
    "naive_over_sft_per_trained_token": ("naive", "sft"),
}
REFUSAL = "Sorry"
MiB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="distinct batches (training steps) per round")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds over the same batches")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="unmeasured rounds first")
    parser.add_argument("--harmful-rows", type=int, default=4, help="harmful rows per micro-batch")
    parser.add_argument("--benign-rows", type=int, default=2, help="benign rows per micro-batch")
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--harmful-tokens", type=int, default=300)
    parser.add_argument("--safe-tokens", type=int, default=100, help="safe answer (and benign answer) tokens")
    parser.add_argument("--vocab", type=int, default=2000, help="words of the generated vocabulary")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default 4; --model-config: all)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--model-config", type=Path, default=None, help="folder with a config.json (random weights)")
    parser.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes NF4 base + LoRA (CUDA)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-form memory subprocesses")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per memory subprocess")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (default bench/results/derta_fused_<dev>)"
    )
    parser.add_argument("--worker", choices=FORMS, default=None, help=argparse.SUPPRESS)  # internal: memory of a form
    parser.add_argument("--worker-output", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_in_4bit and args.model_config is None:
        parser.error("--load-in-4bit needs --model-config (the small Llama trains in full precision)")
    return args


# -- data and models --------------------------------------------------------------------------------------------------


def vocabulary(size: int) -> list[str]:
    return [REFUSAL, *(f"w{i}" for i in range(size))]


def synthetic_rows(args, tokenizer, num_batches: int):
    """Pre-tokenized rows, batch after batch: `--harmful-rows` harmful then `--benign-rows` benign rows each."""
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(args.seed)
    words = tokenizer.convert_tokens_to_ids(vocabulary(args.vocab))[1:]
    refusal = tokenizer.convert_tokens_to_ids(REFUSAL)

    def ids(n: int) -> list[int]:
        return [words[i] for i in torch.randint(len(words), (n,), generator=generator).tolist()]

    rows = []
    for _ in range(num_batches):
        for j in range(args.harmful_rows + args.benign_rows):
            harmful = j < args.harmful_rows
            answer = ids(args.safe_tokens - 1)
            rows.append(
                {
                    "row_index": len(rows),
                    "prompt_ids": ids(args.prompt_tokens),
                    # a refusal (starting with the RTO target) + end of turn, or a benign answer + end of turn
                    "chosen_ids": ([refusal] if harmful else ids(1)) + answer[:-1] + [tokenizer.eos_token_id],
                    "rejected_ids": ids(args.harmful_tokens) if harmful else [],
                }
            )
    return Dataset.from_list(rows)


def model_factory(args, tokenizer, device):
    """`(make_model, peft_config)`: `make_model()` builds the same randomly initialised model each time."""
    import torch

    from hf_safety.toy import tiny_model

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    longest = args.prompt_tokens + args.harmful_tokens + 1 + args.safe_tokens
    peft_config = None
    if args.load_in_4bit or args.model_config is not None:
        from peft import LoraConfig
        from transformers import AutoConfig, AutoModelForCausalLM

        from hf_safety.models import bnb_4bit_config

        config = AutoConfig.from_pretrained(args.model_config)
        if args.layers:
            config.num_hidden_layers = args.layers
        config.max_position_embeddings = max(config.max_position_embeddings, longest)
        if args.load_in_4bit:
            from qlora_gpu import build_qlora_model

            quant = bnb_4bit_config(torch.bfloat16)
            peft_config = LoraConfig(
                r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear"
            )

            def make_model():
                torch.manual_seed(args.seed)
                return build_qlora_model(config, quant, device, torch.bfloat16)[0]

        else:

            def make_model():
                torch.manual_seed(args.seed)
                return AutoModelForCausalLM.from_config(config, dtype=dtype)

        return make_model, peft_config

    def make_model():
        return tiny_model(
            tokenizer,
            "llama",
            seed=args.seed,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.layers or 4,
            num_attention_heads=args.heads,
            max_position_embeddings=longest,
        )

    return make_model, peft_config


# -- the trainers -----------------------------------------------------------------------------------------------------


def build(args, workdir: str, names=TRAINERS) -> dict:
    """The trainers named in `names`, each with its rows and batches; the naive and fused reference batches."""
    import torch
    from datasets import Dataset
    from derta_overhead import check_same
    from trl import SFTConfig, SFTTrainer

    from hf_safety import DeRTaConfig, DeRTaTrainer
    from hf_safety.derta import FUSED, HARMFUL_PREFIX
    from hf_safety.toy import build_tokenizer

    device = torch.device(args.device)
    tokenizer = build_tokenizer([" ".join(vocabulary(args.vocab))], "llama3", "word")
    batch_size = args.harmful_rows + args.benign_rows
    rows = synthetic_rows(args, tokenizer, args.steps)
    make_model, peft_config = model_factory(args, tokenizer, device)
    common = dict(
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        per_device_train_batch_size=batch_size,
        max_steps=args.steps,
        max_length=None,
        logging_steps=10**9,
        activation_checkpointing=args.activation_checkpointing,
        dataloader_pin_memory=False,
    )
    batches = [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(args.steps)]
    setup: dict = {"tokenizer": tokenizer, "device": device, "reference": {}}

    derta_forms = [form for form in FORMS if form in names] or ["naive"]  # sft needs the naive sequences
    for form in derta_forms:
        trainer = DeRTaTrainer(
            model=make_model(),
            args=DeRTaConfig(output_dir=os.path.join(workdir, form), **ARMS[form], **common),
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        if trainer.derta_form != ARMS[form]["derta_form"]:
            raise RuntimeError(f"DeRTaTrainer fell back from {ARMS[form]} to derta_form={trainer.derta_form!r}")
        if trainer.refusal_token_id != tokenizer.convert_tokens_to_ids(REFUSAL):
            raise RuntimeError(f"unexpected RTO target {trainer.refusal_token_id}")
        trainer_rows = trainer._remove_unused_columns(trainer.train_dataset, description="training")
        trainer.data_collator.set_epoch(0)
        setup["reference"][form] = [trainer.data_collator(trainer_rows.__getitems__(b)) for b in batches]
        setup[form] = (trainer, trainer_rows, batches)

    for form in set(setup["reference"]) - {"naive"} if "naive" in setup["reference"] else ():
        for naive, fused in zip(setup["reference"]["naive"], setup["reference"][form]):
            k_naive = naive["harmful_prefix_length"][naive["sequence_kind"] == HARMFUL_PREFIX]
            k_fused = fused["harmful_prefix_length"][fused["sequence_kind"] == FUSED]
            if not torch.equal(k_naive, k_fused) or len(k_fused) != args.harmful_rows:
                raise RuntimeError(f"{form} drew other prefix lengths: {k_naive.tolist()} {k_fused.tolist()}")

    if "sft" in names:
        sequences, sft_batches = [], []
        for batch in setup["reference"]["naive"]:
            start = len(sequences)
            for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
                length = int(mask.sum())
                sequences.append({"input_ids": ids[:length].tolist(), "labels": labels[:length].tolist()})
            sft_batches.append(list(range(start, len(sequences))))
        sft = SFTTrainer(
            model=make_model(),
            args=SFTConfig(output_dir=os.path.join(workdir, "sft"), **common),
            train_dataset=Dataset.from_list(sequences),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        sft_rows = sft._remove_unused_columns(sft.train_dataset, description="training")
        if len(sft_rows) != len(sequences):
            raise RuntimeError(f"SFTTrainer kept {len(sft_rows)} of the {len(sequences)} DeRTa sequences")
        for indices, expected in zip(sft_batches, setup["reference"]["naive"]):
            check_same(sft.data_collator(sft_rows.__getitems__(indices)), expected, "SFT collator")
        setup["sft"] = (sft, sft_rows, sft_batches)

    total_steps = args.steps * (args.warmup_rounds + args.rounds + 2)
    for name in names:
        trainer = setup[name][0]
        if args.activation_checkpointing:  # what `Trainer.train()` does first; the steps here skip `train()`
            trainer.model.activation_checkpointing_enable()
        trainer.create_optimizer_and_scheduler(num_training_steps=total_steps)
        trainer.current_gradient_accumulation_steps = 1
        trainer.model.train()

    setup["tokens"] = {}
    for form, reference in setup["reference"].items():
        setup["tokens"][form] = [
            {
                "labelled": int((batch["labels"][..., 1:] != -100).sum()),
                "input": int(setup[form][0]._prepare_attention_mask(dict(batch))),
                "padded": batch["input_ids"].numel(),
                "sequences": len(batch["sequence_kind"]),
                "rows": batch["input_ids"].shape[0],
            }
            for batch in reference
        ]
    return setup


def loss_check(setup) -> dict:
    """Every arm's loss on the first benched batch, with the same model (the naive trainer's, before any step)."""
    import torch

    trainer = setup["naive"][0]
    losses = {}
    with torch.no_grad(), trainer.compute_loss_context_manager():  # autocast as in `training_step`
        for form in FORMS:
            batch = trainer._prepare_inputs(dict(setup["reference"][form][0]))
            num_items = (batch["labels"][..., 1:] != -100).sum()
            losses[form] = float(trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items))
    return {**losses, "abs_diff": max(abs(losses["naive"] - losses[form]) for form in FORMS)}


def clock_for(device):
    import torch

    if device.type != "cuda":
        return time.perf_counter

    def clock():
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock


def run_round(setup, names, r: int, steps: int):
    """One round of every step for each trainer in `names` (order rotating per step and round): their parts."""
    from derta_overhead import step

    clock = clock_for(setup["device"])
    for name in names:
        if name in FORMS:
            setup[name][0].data_collator.set_epoch(0)  # same draws every round: the reference batches
    gc.collect()
    parts = []
    for i in range(steps):
        shift = (r + i) % len(names)
        timed = {}
        for name in (*names[shift:], *names[:shift]):
            trainer, rows, batches = setup[name]
            _, _, timed[name] = step(trainer, rows, batches[i], clock=clock)
        parts.append(timed)
    return parts


def measure(setup, args) -> list:
    rounds = []
    for r in range(args.warmup_rounds + args.rounds):
        parts = run_round(setup, TRAINERS, r, args.steps)
        if r >= args.warmup_rounds:
            rounds.append(parts)
        label = "warmup" if r < args.warmup_rounds else f"round {r - args.warmup_rounds + 1}/{args.rounds}"
        total = {name: sum(sum(p[name].values()) for p in parts) for name in TRAINERS}
        print(
            f"  {label:>12}: "
            + "  ".join(f"{name} {total[name]:7.3f}s" for name in TRAINERS)
            + f"  fused/naive {total['fused'] / total['naive']:.3f}"
            + f"  fused_padding_free/naive {total['fused_padding_free'] / total['naive']:.3f}",
            flush=True,
        )
    return rounds


def summarize(rounds, tokens, args) -> dict:
    med = statistics.median
    n_steps = len(rounds[0])
    labelled = sum(t["labelled"] for t in tokens["naive"])
    if any(labelled != sum(t["labelled"] for t in tokens[form]) for form in FORMS):
        raise RuntimeError("the forms train different numbers of tokens")
    harmful_rows = args.harmful_rows * n_steps

    def total(rd, i, name):
        return sum(rd[i][name].values())

    seconds = {name: sum(med([total(rd, i, name) for rd in rounds]) for i in range(n_steps)) for name in TRAINERS}
    minima = {name: sum(min(total(rd, i, name) for rd in rounds) for i in range(n_steps)) for name in TRAINERS}
    parts = {
        name: {
            part: sum(med([rd[i][name][part] for rd in rounds]) for i in range(n_steps)) for part in rounds[0][0][name]
        }
        for name in TRAINERS
    }

    def per_round(a, b):
        return [
            sum(total(rd, i, a) for i in range(n_steps)) / sum(total(rd, i, b) for i in range(n_steps))
            for rd in rounds
        ]

    pairs = RATIOS
    ratios = {key: seconds[a] / seconds[b] for key, (a, b) in pairs.items()}
    return {
        "labelled_tokens_per_round": labelled,
        "harmful_rows_per_round": harmful_rows,
        "seconds_per_round": seconds,
        "seconds_per_round_by_part": parts,
        "seconds_per_harmful_row": {name: seconds[name] / harmful_rows for name in FORMS},
        "us_per_trained_token": {name: seconds[name] / labelled * 1e6 for name in TRAINERS},
        "ratio": ratios,
        "ratio_min_per_step": {key: minima[a] / minima[b] for key, (a, b) in pairs.items()},
        "ratio_median_of_rounds": {key: med(per_round(a, b)) for key, (a, b) in pairs.items()},
        "ratio_range_of_rounds": {key: [min(per_round(a, b)), max(per_round(a, b))] for key, (a, b) in pairs.items()},
    }


# -- peak memory, one form per process --------------------------------------------------------------------------------


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """This process's peak RSS (`VmHWM`). Not `ru_maxrss`: Linux carries the parent's peak into a child's across
    fork + exec, so every child of a big parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> bool:
    """Resets `VmHWM` to the current RSS (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_worker(args) -> dict:
    """Builds one form's trainer only, runs `--warmup-rounds` + 2 rounds of its steps, returns its peak memory."""
    import torch

    with tempfile.TemporaryDirectory() as workdir:
        setup = build(args, workdir, names=(args.worker,))
        device = setup["device"]
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            setup_peak, before, reset = peak_rss(), current_rss(), reset_peak_rss()
        for r in range(args.warmup_rounds + 2):
            run_round(setup, (args.worker,), r, args.steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            return {
                "measure": "torch.cuda.max_memory_allocated",
                "peak_mib": peak / MiB,
                "before_steps_mib": before / MiB,
                "rise_mib": (peak - before) / MiB,
                "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / MiB,
            }
        peak = peak_rss()
        return {
            # with the reset: the peak over the steps; without: over the whole process (setup included)
            "measure": "peak RSS (VmHWM, reset before the steps)" if reset else "peak RSS (VmHWM, whole process)",
            "peak_mib": peak / MiB,
            "before_steps_mib": before / MiB,
            "rise_mib": (peak - before) / MiB,
            "setup_peak_mib": setup_peak / MiB,
        }


def memory(args, argv) -> dict:
    """Each form's peak memory, measured in its own process."""
    results = {}
    for form in FORMS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "memory.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", form, "--worker-output", str(out)]
            print(f"memory: {form} in its own process ...", flush=True)
            subprocess.run(cmd, check=True, timeout=args.timeout)
            results[form] = json.loads(out.read_text())
    for form in FORMS[1:]:
        results[f"{form}_over_naive_peak"] = results[form]["peak_mib"] / results["naive"]["peak_mib"]
        results[f"{form}_over_naive_rise"] = results[form]["rise_mib"] / max(results["naive"]["rise_mib"], 1e-9)
    return results


# -- main -------------------------------------------------------------------------------------------------------------


def run(args, argv=()) -> dict:
    """The timing (and, unless `--no-memory`, the memory subprocesses); returns the result (not written)."""
    import datasets
    import torch
    import transformers
    import trl
    from bench_env import device_info, versions

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    elif not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    torch.manual_seed(args.seed)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        setup = build(args, workdir)
        model = setup["naive"][0].model
        device = setup["device"]
        config = model.config
        n_params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        checked = loss_check(setup)
        tokens = setup["tokens"]
        print(
            f"model: {config.model_type} hidden={config.hidden_size} layers={config.num_hidden_layers} "
            f"vocab={config.vocab_size}, {n_params / 1e6:.2f}M params ({trainable / 1e6:.2f}M trainable), "
            f"{'4-bit + LoRA, ' if args.load_in_4bit else ''}activation checkpointing "
            f"{'on' if args.activation_checkpointing else 'off'}; device {device}; {args.steps} steps x "
            f"({args.harmful_rows} harmful + {args.benign_rows} benign rows): "
            + ", ".join(
                f"{form} {sum(t['sequences'] for t in tokens[form])} sequences in {sum(t['rows'] for t in tokens[form])}"
                f" rows, {sum(t['input'] for t in tokens[form])} input / {sum(t['padded'] for t in tokens[form])} "
                f"padded tokens, loss {checked[form]:.6f}"
                for form in FORMS
            )
            + f" (max |diff| {checked['abs_diff']:.2e}); setup {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        t_measure = time.perf_counter()
        rounds = measure(setup, args)
        measure_seconds = time.perf_counter() - t_measure
        summary = summarize(rounds, tokens, args)
        del setup, model
        gc.collect()

    mem = None if args.no_memory else memory(args, [a for a in argv if a != "--no-memory"])
    ratio = summary["ratio"]
    passes = {key: ratio[key] <= target for key, target in TARGETS.items()}
    if mem is not None:
        for form in FORMS[1:]:
            passes[f"{form}_peak_memory_not_above_naive"] = mem[form]["peak_mib"] <= mem["naive"]["peak_mib"]
    result = {
        "benchmark": "derta_fused",
        "targets": {**TARGETS, **{f"{form}_over_naive_peak_memory": 1.0 for form in FORMS[1:]}},
        "pass": passes,
        **summary,
        "memory": mem,
        "loss_check": checked,
        "device": device_info(device),
        "versions": {**versions(), "trl": trl.__version__, "datasets": datasets.__version__},
        "model": {
            "model_type": config.model_type,
            "config": str(args.model_config) if args.model_config else "hf_safety.toy.tiny_model",
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "vocab_size": config.vocab_size,
            "parameters": n_params,
            "trainable_parameters": trainable,
            "load_in_4bit": args.load_in_4bit,
            "activation_checkpointing": args.activation_checkpointing,
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if "worker" not in k},
        "measure_seconds": measure_seconds,
        "step_tokens": tokens,
        "rounds": rounds,
    }
    return result


def report(result: dict) -> None:
    ratio, per_row = result["ratio"], result["seconds_per_harmful_row"]
    print(
        f"\ntime per harmful row (each step's median of {result['config']['rounds']} rounds; benign rows included): "
        + ", ".join(f"{form} {per_row[form] * 1e3:.1f} ms" for form in FORMS)
        + "; per trained token: "
        + ", ".join(f"{k} {v:.1f} us" for k, v in result["us_per_trained_token"].items())
    )
    for key, target in TARGETS.items():
        verdict = "PASS" if result["pass"][key] else "FAIL"
        print(
            f"{key}: {ratio[key]:.3f}x -> {verdict} (target <= {target:.2f}x; min per step "
            f"{result['ratio_min_per_step'][key]:.3f}x, median of rounds {result['ratio_median_of_rounds'][key]:.3f}x)"
        )
    print(f"naive_over_sft_per_trained_token: {ratio['naive_over_sft_per_trained_token']:.3f}x")
    mem = result["memory"]
    if mem is not None:
        print(
            f"peak memory ({mem['naive']['measure']}, one process per arm): naive {mem['naive']['peak_mib']:.0f} MiB "
            f"(+{mem['naive']['rise_mib']:.0f} over the steps)"
        )
        for form in FORMS[1:]:
            verdict = "PASS" if result["pass"][f"{form}_peak_memory_not_above_naive"] else "FAIL"
            print(
                f"  {form} {mem[form]['peak_mib']:.0f} MiB (+{mem[form]['rise_mib']:.0f}) -> {form}/naive "
                f"{mem[f'{form}_over_naive_peak']:.3f} -> {verdict}"
            )
    check = result["loss_check"]
    print(
        "loss on the first batch: " + ", ".join(f"{form} {check[form]:.6f}" for form in FORMS) + ", "
        f"|diff| {check['abs_diff']:.2e}"
    )


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        import torch
        import transformers

        warnings.filterwarnings("ignore")
        transformers.logging.set_verbosity_error()
        if args.device == "cpu":
            torch.set_num_threads(args.threads)
        figures = memory_worker(args)
        args.worker_output.write_text(json.dumps(figures))
        return figures
    from bench_env import write_result

    result = run(args, argv)
    report(result)
    output = args.output or BENCH / "results" / f"derta_fused_{args.device}.json"
    return write_result(output, result)


if __name__ == "__main__":
    main()
