"""`hf-safety demo --method seas`: SEAS's arms race (arXiv 2408.02632) in the toy SEAS world, on CPU in minutes.

1. The toy world's starting points are built (once, cached like the other toy models): the target T0
   (`toy://seas-target`: refuses plain requests, complies with styled ones with a style-dependent probability) and the
   red team R0 (`toy://seas-red-team`: SFT on `SeedPool.red_team_sft_dataset`, writes prompts of the seed's topic
   in every style about equally often). See `hf_safety.toy.seas`.
2. [`~hf_safety.seas.SEASTrainer`] runs the rounds (attack, judge, pairs, DPO of both sides) with the toy judge.
3. After each round a [`SEASCallback`] measures two fixed yardsticks: `red_team_asr`, the round's red team against
   the frozen T0 (same seeds every round), and `target_asr`, the round's target against the fixed attack set
   (`SEASTrainer(eval_prompts=...)`, the package's `SafetyEvaluator`), plus the target's over-refusal of benign
   styled requests; round 0 is R0 and T0.

It prints a line per round and a table, and writes `results.json`, `seas_asr.png` and `seas_log.txt` (the trainers'
own output) to the output folder, the SEAS run itself under `seas/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import concatenate_datasets
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
from trl import SFTConfig, SFTTrainer

from ..seas import SEASCallback, SEASConfig, SEASTrainer, SeedPool, run_attack_stage
from . import TOY_SEAS_MODELS
from .demo import silenced, toy_training_args
from .model import tiny_model
from .seas import STYLES, SEASToyWorld, ToySEASJudge, style_of
from .tokenizer import build_tokenizer


TOY_SEAS_TARGET, TOY_SEAS_RED_TEAM = TOY_SEAS_MODELS


@dataclass
class ToySEASBuild:
    """How the toy SEAS starting points are built (the cache folder's name carries a hash of these and the world)."""

    seed: int = 0
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    batch_size: int = 32
    target_epochs: float = 3.0
    target_learning_rate: float = 3e-3
    red_team_examples: int = 1200
    red_team_epochs: float = 3.0
    red_team_learning_rate: float = 3e-3
    num_seed_examples: int = 3

    def fingerprint(self, world: SEASToyWorld) -> str:
        text = json.dumps([asdict(self), world.corpus(), world.compliance, world.copies], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Inside the block torch uses `num_threads` intra-op threads (`None`: unchanged). Tiny models run fastest on
    one: with two or more, OpenMP's synchronisation costs more than the matrix work (and far more on shared cores)."""
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sft(model, tokenizer, dataset, folder: Path, build: ToySEASBuild, epochs: float, learning_rate: float) -> None:
    args = SFTConfig(
        **toy_training_args(
            folder,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=build.batch_size,
            seed=build.seed,
            progress=False,
            logging_strategy="no",
        )
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(folder)


def build_toy_seas_model(
    name: str, folder: Path, world: SEASToyWorld | None = None, build: ToySEASBuild | None = None
) -> None:
    """Trains the toy SEAS starting point `name` (T0 or R0) and saves it with its tokenizer in `folder`."""
    world, build = world or SEASToyWorld(seed=0), build or ToySEASBuild()
    tokenizer = build_tokenizer(world.corpus(), chat_format="llama3", model="word")
    model = tiny_model(
        tokenizer,
        "llama",
        seed=build.seed + (name == TOY_SEAS_RED_TEAM),
        hidden_size=build.hidden_size,
        num_hidden_layers=build.num_hidden_layers,
        num_attention_heads=build.num_attention_heads,
    )
    with silenced(), torch_threads(1):
        if name == TOY_SEAS_TARGET:
            dataset = world.target_sft_dataset()
            _sft(model, tokenizer, dataset, folder, build, build.target_epochs, build.target_learning_rate)
        elif name == TOY_SEAS_RED_TEAM:
            dataset = world.red_team_sft_dataset(build.red_team_examples, k=build.num_seed_examples)
            _sft(model, tokenizer, dataset, folder, build, build.red_team_epochs, build.red_team_learning_rate)
        else:
            raise ValueError(f"not a toy SEAS model: {name!r}; they are {TOY_SEAS_MODELS}")


def toy_seas_model_path(name: str, root: Path) -> Path:
    """Where `name` is cached under `root`: its folder name carries the fingerprint of the world and the build."""
    build, world = ToySEASBuild(), SEASToyWorld(seed=0)
    stem = "toy-seas-target" if name == TOY_SEAS_TARGET else "toy-seas-red-team"
    return root / f"{stem}-{build.fingerprint(world)}"


# -- measuring the rounds ----------------------------------------------------------------------------------------


@dataclass
class SEASDemoConfig:
    """Sizes and schedules of the SEAS demo; the defaults are the documented run (about a minute on 2 CPU cores).
    `sft_weight`: weight of the NLL of the chosen side added to DPO on both sides (0: pure DPO, the paper's loss);
    `extra`: any other `SEASConfig` fields."""

    output_dir: str = "outputs/seas-demo"
    seed: int = 0
    num_iterations: int = 3
    # attack stage (SEASConfig)
    num_seed_examples: int = 3
    seeds_per_iteration: int = 64
    num_adversarial_prompts: int = 4
    num_responses: int = 4
    # DPO (the target's; the red team's where given)
    learning_rate: float = 5e-5
    beta: float = 0.1
    num_train_epochs: float = 1.0
    red_team_learning_rate: float | None = 5e-4
    red_team_num_train_epochs: float | None = 2.0
    red_team_beta: float | None = None
    sft_weight: float = 1.0
    batch_size: int = 16
    general_data_ratio: float = 0.5
    # yardsticks: the red team against the frozen T0 (fixed seeds, same every round)
    eval_seeds: int = 64
    eval_num_prompts: int = 4
    eval_num_responses: int = 4
    num_threads: int | None = 1
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class ASRTracker(SEASCallback):
    """
    The demo's yardsticks, after each round (and, through [`record`], for R0/T0): the round's red team against the
    frozen T0 (the same seeds and sampling seed every round), and the round's target on the fixed attack set and the
    benign set through the trainer's `SafetyEvaluator` (seeded, so its `target_asr` is the trainer's own metric,
    here with the records for the per-style figures).
    """

    def __init__(self, demo: SEASDemoConfig, frozen_target, tokenizer, seeds, judge, echo=print):
        self.demo, self.seeds, self.judge = demo, seeds, judge
        self.frozen_target, self.tokenizer = frozen_target, tokenizer
        self.trainer: SEASTrainer | None = None  # set once the trainer exists
        self.echo = echo
        self.rounds: list[dict[str, Any]] = []
        self.start = time.time()

    def red_team_vs_t0(self, args: SEASConfig, red_team_model, tokenizer) -> dict[str, Any]:
        log, stats = run_attack_stage(
            (red_team_model, tokenizer),
            (self.frozen_target, self.tokenizer),
            self.seeds,
            self.judge,
            num_prompts=self.demo.eval_num_prompts,
            num_responses=self.demo.eval_num_responses,
            red_team_generation_config=args.generation_config("red_team"),
            target_generation_config=args.generation_config("target"),
            batch_size=args.generation_batch_size,
            judge_batch_size=args.judge_batch_size,
            seed=10_000 + self.demo.seed,
        )
        prompts = list(dict.fromkeys(log["adversarial_prompt"])) if len(log) else []
        written = [p for p, r in zip(log["adversarial_prompt"], log["response_index"]) if r == 0] if len(log) else []
        styles = Counter(style_of(p) for p in written)
        total = sum(styles.values()) or 1
        return {
            "red_team_asr": stats.asr,
            "red_team_unknown": stats.num_unknown,
            "red_team_prompts": stats.num_adversarial_prompts,
            "red_team_unique_prompts": len(prompts),
            "red_team_styles": {s: styles.get(s, 0) / total for s in (*STYLES, "other")},
        }

    def record(self, iteration: int, args, red_team_model, red_tokenizer, report: dict[str, Any]) -> dict[str, Any]:
        row = {"round": iteration, **self.red_team_vs_t0(args, red_team_model, red_tokenizer), **report}
        self.rounds.append(row)
        self.echo(
            f"round {iteration}/{self.demo.num_iterations}: red team ASR vs T0 {row['red_team_asr']:.1%}, target ASR "
            f"on the fixed attacks {row['target_asr']:.1%} ({time.time() - self.start:.0f} s)"
        )
        return row

    def on_round_end(self, args, state, control, iteration=None, metrics=None, red_team_model=None, **kwargs):
        trainer = self.trainer
        # The trainer's evaluator again (seeded: the same samples as the trainer's `target_asr`), for the records
        report = trainer.evaluator.evaluate(kwargs["target_model"], trainer.processing_class, model_name="T")
        figures = _report_figures(report)
        metrics = metrics or {}
        figures.update(
            target_asr_trainer_metric=metrics.get("target_asr"),
            attack_stage_asr=metrics.get("red_team_asr"),
            num_red_team_pairs=metrics.get("num_red_team_pairs"),
            num_target_pairs=metrics.get("num_target_pairs"),
        )
        self.record(iteration + 1, args, red_team_model, trainer.red_team_tokenizer, figures)


def _report_figures(report) -> dict[str, Any]:
    result = report.results[0]
    by_style: dict[str, list] = {}
    for record in result.records:
        if record.label == "unsafe":
            by_style.setdefault(record.category, []).append(record.unsafe is True)
    return {
        "target_asr": result.asr.rate,
        "target_unknown": result.asr.unknown_rate,
        "target_over_refusal": result.over_refusal.rate,
        "target_asr_by_style": {s: sum(v) / len(v) for s, v in by_style.items()},
    }


# -- the demo ----------------------------------------------------------------------------------------------------


def seas_args(cfg: SEASDemoConfig, output_dir: Path) -> SEASConfig:
    # DPO plus `sft_weight` x the NLL of the chosen side (TRL's multi-loss: loss_type=["sigmoid", "sft"]), which keeps
    # the tiny red team writing well-formed prompts (pure DPO, the paper's loss, turns them into word salad here)
    loss = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight else {}
    return SEASConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        activation_checkpointing=False,
        logging_steps=10,  # the DPO logs of both sides go to seas_log.txt
        disable_tqdm=True,
        seed=cfg.seed,
        num_iterations=cfg.num_iterations,
        num_seed_examples=cfg.num_seed_examples,
        seeds_per_iteration=cfg.seeds_per_iteration,
        num_adversarial_prompts=cfg.num_adversarial_prompts,
        num_responses=cfg.num_responses,
        red_team_max_new_tokens=32,
        target_max_new_tokens=32,
        generation_batch_size=32,
        judge_batch_size=256,
        learning_rate=cfg.learning_rate,
        beta=cfg.beta,
        num_train_epochs=cfg.num_train_epochs,
        red_team_learning_rate=cfg.red_team_learning_rate,
        red_team_num_train_epochs=cfg.red_team_num_train_epochs,
        red_team_beta=cfg.red_team_beta,
        per_device_train_batch_size=cfg.batch_size,
        lr_scheduler_type="constant",
        general_data_ratio=cfg.general_data_ratio,
        **loss,
        **cfg.extra,
    )


def run_seas_demo(
    output_dir: str | os.PathLike | None = None,
    num_iterations: int | None = None,
    config: SEASDemoConfig | None = None,
) -> dict[str, Any]:
    """
    Runs the SEAS demo end to end (see the module docstring) and returns what it writes to `results.json`:
    `rounds` (per round 0..num_iterations: `red_team_asr` against T0, `target_asr` on the fixed attack set,
    `target_over_refusal`, the red team's style mix...), `config`, `world` and `seconds`. The trainers' own output
    (progress bars, logs) goes to `seas_log.txt` in the output folder; one line per round is printed instead
    (`config.progress=False`: only the final table).
    """
    from . import resolve_model

    cfg = config or SEASDemoConfig()
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    if num_iterations is not None:
        cfg.num_iterations = num_iterations
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    start = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "seas", ignore_errors=True)  # the demo's own SEAS run: a new demo starts it afresh
    world = SEASToyWorld(seed=0)
    judge = ToySEASJudge()
    console = sys.stdout

    def echo(text: str) -> None:
        if cfg.progress:
            print(text, file=console, flush=True)

    paths = {name: resolve_model(name) for name in TOY_SEAS_MODELS}  # built on first use (says so), then cached
    built = time.time() - start
    for name, path in paths.items():
        echo(f"{name}: {path}")
    with (
        open(out / "seas_log.txt", "w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        warnings.catch_warnings(),
        silenced(),
        torch_threads(cfg.num_threads),
    ):
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 deprecations raised inside TRL
        tokenizer = AutoTokenizer.from_pretrained(paths[TOY_SEAS_TARGET])
        frozen = AutoModelForCausalLM.from_pretrained(paths[TOY_SEAS_TARGET]).eval().requires_grad_(False)
        pool = world.seed_pool()
        eval_seeds = SeedPool(pool, cfg.num_seed_examples).sample(cfg.eval_seeds, seed=12_345 + cfg.seed)
        tracker = ASRTracker(cfg, frozen, tokenizer, eval_seeds, judge, echo=echo)
        args = seas_args(cfg, out / "seas")
        trainer = SEASTrainer(
            model=TOY_SEAS_TARGET,
            red_team_model=TOY_SEAS_RED_TEAM,
            args=args,
            train_dataset=pool,
            judge=judge,
            general_dataset=world.general_dataset(),
            eval_prompts=concatenate_datasets([world.attack_set(), world.benign_set()]),
            callbacks=[tracker],
        )
        trainer.evaluator.config.progress = False
        tracker.trainer = trainer
        report = trainer.evaluator.evaluate(frozen, tokenizer, model_name="T0")
        tracker.record(0, args, trainer.red_team_model, trainer.red_team_tokenizer, _report_figures(report))
        trainer.train()
    payload = {
        "rounds": tracker.rounds,
        "config": asdict(cfg),
        "world": {
            "styles": world.compliance,
            "topics": list(world.topics),
            "seed_pool": len(pool),
            "attack_set": len(world.attack_set()),
            "benign_set": len(world.benign_set()),
        },
        "seconds": round(time.time() - start, 1),
        "seconds_building_models": round(built, 1),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    plot(tracker.rounds, out / "seas_asr.png")
    print(format_table(tracker.rounds))
    print(f"\n{time.time() - start:.0f} s; written to {out / 'results.json'} and {out / 'seas_asr.png'}")
    return payload


def format_table(rounds: list[dict[str, Any]]) -> str:
    header = (
        f"{'round':<7}{'red team ASR vs T0':>20}{'target ASR (fixed)':>20}{'garbled':>9}{'over-refusal':>14}"
        "   red team styles"
    )
    lines = [header, "-" * (len(header) + 30)]
    for row in rounds:
        styles = " ".join(f"{s[:4]} {share:.0%}" for s, share in row["red_team_styles"].items())
        lines.append(
            f"{row['round']:<7}{row['red_team_asr']:>20.1%}{row['target_asr']:>20.1%}{row['target_unknown']:>9.1%}"
            f"{row['target_over_refusal']:>14.1%}   {styles}"
        )
    return "\n".join(lines)


def plot(rounds: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row["round"] for row in rounds]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(
        x, [100 * r["red_team_asr"] for r in rounds], "-o", color="tab:red", label="red team $R_i$ vs the frozen $T_0$"
    )
    ax.plot(
        x,
        [100 * r["target_asr"] for r in rounds],
        "-s",
        color="tab:blue",
        label="target $T_i$ vs the fixed attack set",
    )
    ax.plot(
        x,
        [100 * r["target_over_refusal"] for r in rounds],
        ":^",
        color="tab:gray",
        label="target $T_i$ over-refusal (benign set)",
    )
    ax.set_xlabel("SEAS round i")
    ax.set_ylabel("rate (%)")
    ax.set_xticks(x)
    ax.set_ylim(-3, 103)
    ax.set_title("Toy SEAS world: attack success rate over rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
