"""`hf-safety demo`: what DeRTa fixes, on CPU in minutes, in the toy world.

1. A tiny Llama is "pretrained" to answer every request of the world, harmful ones included (the unsafe start).
2. From that start, three arms are safety-trained with the same data and steps through `DeRTaTrainer`'s switches:
   plain SFT on the safe answers, harmful-prefix MLE only, and full DeRTa (prefix + RTO).
3. Each arm is attacked with forced harmful prefixes of k tokens (seen and held-out harmful topics), with harm that
   starts deep inside a benign-looking answer (a benign answer's first two steps, then j tokens of the harmful
   answer), and asked the benign test requests (exact match, so over-refusal shows).

It prints the tables and writes `results.json`, `refusal_vs_prefix.png` and `refusal_deep_harm.png` to the output
folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, PrinterCallback
from transformers.utils import logging as hf_logging
from trl import SFTConfig, SFTTrainer

from ..derta import DeRTaConfig, DeRTaTrainer
from .evaluation import answer_exact_match, deep_harm_refusal_rates, prefill_refusal_rates
from .model import tiny_model
from .tokenizer import build_tokenizer
from .world import DEFAULT_HELD_OUT, ToyWorld


ARMS = {
    "sft": {"harmful_prefix": False, "rto": False},
    "harmful_prefix": {"harmful_prefix": True, "rto": False},
    "derta": {"harmful_prefix": True, "rto": True},
}


@dataclass
class DemoConfig:
    """Sizes and schedules of the demo; the defaults are the documented full run (a few minutes on 2 CPU cores).

    `prefix_lengths`: the k of the forced-prefix attack; `deep_depths`: the j of the deep-harm attack (harmful tokens
    after a benign answer's first `deep_opening_steps` steps; empty: no deep-harm attack, table or plot); `window`:
    the refusal must come within this many generated tokens."""

    output_dir: str = "outputs/demo"
    seed: int = 0
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    pretrain_epochs: int = 30
    pretrain_learning_rate: float = 3e-3
    safety_epochs: int = 20
    safety_learning_rate: float = 2e-3
    batch_size: int = 16
    prefix_lengths: list[int] = field(default_factory=lambda: [0, 1, 3, 6, 9, 12])
    window: int = 4
    deep_depths: list[int] = field(default_factory=lambda: [0, 1, 3, 6, 9, 12])
    deep_opening_steps: int = 2
    harmful_topics: list[str] | None = None
    benign_topics: list[str] | None = None
    held_out: list[str] = field(default_factory=lambda: list(DEFAULT_HELD_OUT))
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    progress: bool = True


def toy_training_args(
    output_dir: str | Path, *, epochs: float, learning_rate: float, batch_size: int, seed: int, progress: bool, **extra
) -> dict:
    """The training arguments every toy-world training shares (CPU, float32, no checkpoints, cosine schedule)."""
    return dict(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        activation_checkpointing=False,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        seed=seed,
        disable_tqdm=not progress,
        **{"logging_steps": 100, **extra},
    )


def _common_args(cfg: DemoConfig, output_dir: Path, epochs: int, learning_rate: float) -> dict:
    return toy_training_args(
        output_dir,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
    )


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Inside the block: no transformers logs below errors, no transformers or datasets progress bars."""
    verbosity, bars, datasets_bars = (
        hf_logging.get_verbosity(),
        hf_logging.is_progress_bar_enabled(),
        not are_progress_bars_disabled(),
    )
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if datasets_bars:
        disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if datasets_bars:
            enable_progress_bars()


def pretrain_unsafe(
    cfg: DemoConfig,
    world: ToyWorld,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    name: str = "unsafe-start",
    quiet: bool = False,
) -> Path:
    """
    Trains the unsafe starting point (answers everything) and saves it with its tokenizer to `output_dir / name`;
    `quiet=True` prints nothing (no training logs, no progress bars).
    """
    path = Path(output_dir) / name
    model = tiny_model(
        tokenizer,
        "llama",
        seed=cfg.seed,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
    )
    args = _common_args(cfg, path, cfg.pretrain_epochs, cfg.pretrain_learning_rate)
    if quiet:
        args.update(logging_strategy="no", disable_tqdm=True)
    with silenced() if quiet else contextlib.nullcontext():
        args = SFTConfig(**args)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=world.pretrain_dataset(), processing_class=tokenizer
        )
        if quiet:
            trainer.remove_callback(PrinterCallback)  # it would still print the end-of-training metrics
        trainer.train()
        trainer.save_model(str(path))
    return path


def train_arm(cfg: DemoConfig, arm: str, start: Path, world: ToyWorld, output_dir: Path) -> DeRTaTrainer:
    """Safety-trains one arm from the unsafe start (loaded by path, like any checkpoint)."""
    args = DeRTaConfig(**_common_args(cfg, output_dir / arm, cfg.safety_epochs, cfg.safety_learning_rate), **ARMS[arm])
    trainer = DeRTaTrainer(model=str(start), args=args, train_dataset=world.safety_dataset())
    trainer.train()
    with contextlib.suppress(OSError):  # nothing is saved per arm (save_strategy="no"): leave no empty folder
        os.rmdir(args.output_dir)
    return trainer


def evaluate_model(cfg: DemoConfig, model, tokenizer, world: ToyWorld) -> dict:
    """
    `refusal_{seen,held_out}`: refusal rate after a forced harmful prefix, per k; `deep_{seen,held_out}` (when
    `cfg.deep_depths`): refusal rate when j harmful tokens follow a benign answer's opening, per j;
    `benign_exact_match`.
    """
    sets = world.eval_sets()
    result = {}
    for name in ("seen", "held_out"):
        harmful = sets[f"harmful_{name}"]
        result[f"refusal_{name}"] = prefill_refusal_rates(
            model, tokenizer, harmful, cfg.prefix_lengths, window=cfg.window, progress=False
        )
        if cfg.deep_depths:
            result[f"deep_{name}"] = deep_harm_refusal_rates(
                model,
                tokenizer,
                harmful,
                lambda i: world.benign_opening(i, cfg.deep_opening_steps),
                cfg.deep_depths,
                window=cfg.window,
                progress=False,
            )
    result["benign_exact_match"] = answer_exact_match(model, tokenizer, sets["benign"])
    return result


def format_table(results: dict, prefix_lengths: list[int], key: str = "refusal", label: str = "k") -> str:
    """The table of `results[arm][f"{key}_{seen,held_out}"]` over `prefix_lengths` (columns `label=...`); the
    forced-prefix table (`key="refusal"`) also shows benign EM."""
    benign_column = key == "refusal"
    header = f"{'model':<16}{'topics':<10}" + "".join(f"{label + '=' + str(k):>8}" for k in prefix_lengths)
    header += "  benign EM" if benign_column else ""
    lines = [header, "-" * len(header)]
    for arm, result in results.items():
        for name in ("seen", "held_out"):
            rates = result[f"{key}_{name}"]
            cells = "".join(f"{rates[k]:>8.0%}" for k in prefix_lengths)
            benign = f"{result['benign_exact_match']:>11.0%}" if benign_column and name == "seen" else ""
            lines.append(f"{arm:<16}{name:<10}{cells}{benign}")
    return "\n".join(lines)


def plot(
    results: dict,
    prefix_lengths: list[int],
    path: Path,
    key: str = "refusal",
    window: int = 4,
    xlabel: str = "forced harmful prefix length k (tokens)",
    title: str = "Toy world: refusal after a forced harmful prefix",
) -> None:
    """Plots `results[arm][f"{key}_{seen,held_out}"]` over `prefix_lengths` (`key`: `"refusal"`, the forced
    prefix, or `"deep"`, the deep-harm attack) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = {"unsafe-start": "tab:gray", "start": "tab:gray", "sft": "tab:red", "harmful_prefix": "tab:orange"}
    markers = "osD^v"
    for i, (arm, result) in enumerate(results.items()):
        # Arms often coincide (0% or 100%): a small horizontal offset per arm keeps every line visible
        offset = (i - (len(results) - 1) / 2) * 0.12
        for name, style in (("seen", "-"), ("held_out", "--")):
            rates = result[f"{key}_{name}"]
            ax.plot(
                [k + offset for k in prefix_lengths],
                [100 * rates[k] for k in prefix_lengths],
                style,
                marker=markers[i % len(markers)],
                color=colors.get(arm, "tab:blue"),
                label=f"{arm} ({name.replace('_', '-')} topics)",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"refusal within {window} tokens (%)")
    ax.set_title(title)
    ax.set_ylim(-5, 105)
    ax.set_xticks(prefix_lengths)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    cfg: DemoConfig,
    world: ToyWorld,
    tokenizer: PreTrainedTokenizerBase,
    models: dict,
    config: dict | None = None,
) -> dict:
    """
    Evaluates `models` (name -> model), prints the tables, writes `results.json` (recording `config`, by default the
    demo's `cfg`), `refusal_vs_prefix.png` and, with `cfg.deep_depths`, `refusal_deep_harm.png`.
    """
    results = {name: evaluate_model(cfg, model, tokenizer, world) for name, model in models.items()}
    output_dir = Path(cfg.output_dir)
    print(format_table(results, cfg.prefix_lengths))
    plot(results, cfg.prefix_lengths, output_dir / "refusal_vs_prefix.png", window=cfg.window)
    if cfg.deep_depths:
        opening = f"a benign answer's first {cfg.deep_opening_steps} steps"
        print(f"\nHarm deep inside a benign-looking answer: the reply is forced to open with {opening}, then j tokens")
        print("of the harmful answer")
        print(format_table(results, cfg.deep_depths, key="deep", label="j"))
        plot(
            results,
            cfg.deep_depths,
            output_dir / "refusal_deep_harm.png",
            key="deep",
            window=cfg.window,
            xlabel=f"harmful tokens j forced after {opening}",
            title="Toy world: refusal when the harm starts deep inside a benign-looking answer",
        )
    payload = {
        "config": asdict(cfg) if config is None else config,
        "world": {"held_out": list(world.held_out)},
        "results": results,
    }
    (output_dir / "results.json").write_text(json.dumps(payload, indent=2))
    return results


def run_demo(cfg: DemoConfig) -> dict:
    """Runs the demo end to end; returns the results written to `results.json`."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    world = ToyWorld(
        seed=cfg.seed, harmful_topics=cfg.harmful_topics, benign_topics=cfg.benign_topics, held_out=tuple(cfg.held_out)
    )
    tokenizer = build_tokenizer(world.corpus(), chat_format="llama3", model="word")
    try:
        start = pretrain_unsafe(cfg, world, tokenizer, output_dir)
        models = {"unsafe-start": AutoModelForCausalLM.from_pretrained(start)}
        for arm in tqdm(cfg.arms, desc="safety-training arms", disable=not cfg.progress):
            models[arm] = train_arm(cfg, arm, start, world, output_dir).model
    finally:
        hf_logging.set_verbosity(verbosity)
    return write_report(cfg, world, tokenizer, models)
