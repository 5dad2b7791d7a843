"""`hf-safety`: the command line, thin over the modules.

- `hf-safety derta --config recipes/derta/toy.yaml [--field value ...]`: train with DeRTa from a YAML recipe.
- `hf-safety seas --config recipes/seas/toy.yaml [--field value ...]`: train with SEAS from a YAML recipe.
- `hf-safety demo [--output-dir DIR]`: the toy-world demo (unsafe start, three safety-training arms, prefill attack);
  `hf-safety demo --method seas`: the toy SEAS world (red team vs target over three rounds, ASR per round).
- `hf-safety eval --model PATH_OR_ID --suites advbench xstest --attacks none prefill --output_dir DIR` (or
  `--config eval.yaml`): safety evaluation (ASR with confidence intervals, refusal and over-refusal), saved as
  records.jsonl, report.json, summary.md and plots; the flags are the fields of `SafetyEvalConfig`.
- `hf-safety data build --config recipes/data/derta-mix.yaml --output DIR` (or `--builder pku-saferlhf ...`): rows of
  the data contract from the public safety datasets.
- `hf-safety push model|dataset|staged PATH --repo-id ORG/NAME`: publish a model or dataset with its card (datasets
  with harmful text private by default); offline, stage what would be pushed.
- `hf-safety plan --model ID_OR_CONFIG --method derta|seas|sft --gpu 24 [--recipe RECIPE.yaml] [--json]`: will it fit?
  Peak GPU memory from the model config alone, by term, with what to change when it does not fit (exit status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys


COMMANDS = {
    "derta": "Train with DeRTa from a YAML recipe (same arguments as recipes/derta_llama3.py)",
    "seas": "Train with SEAS from a YAML recipe (same arguments as recipes/seas_llama3.py)",
    "demo": "Toy world on CPU: SFT vs harmful-prefix vs DeRTa (default), or --method seas: SEAS's red team vs target",
    "eval": "Safety evaluation: suites x attacks, judged; ASR, refusal, over-refusal; report + plots",
    "data": "data build: rows of the data contract from PKU-SafeRLHF, BeaverTails, hh-rlhf, SEAS, messages data",
    "push": "Publish a model (adapter or merged) or a safety dataset (private by default) to the Hub, with its card",
    "plan": "Will it fit? Peak GPU memory of a DeRTa/SEAS/SFT run from the model config; what to change if not",
}

DERTA_USAGE = """usage: hf-safety derta --config RECIPE.yaml [--field value ...]

Trains with DeRTa from a YAML recipe; any field of the recipe can be overridden on the command line, e.g.
  hf-safety derta --config recipes/derta/toy.yaml                  # the toy world: CPU, no Hub, a few minutes
  hf-safety derta --config recipes/derta/toy.yaml --max_steps 10   # a shorter run
All the fields: hf-safety derta --help"""

SEAS_USAGE = """usage: hf-safety seas --config RECIPE.yaml [--field value ...]

Trains a red team and a target with SEAS from a YAML recipe; any field can be overridden on the command line, e.g.
  hf-safety seas --config recipes/seas/toy.yaml                       # the toy SEAS world: CPU, no Hub, minutes
  hf-safety seas --config recipes/seas/toy.yaml --num_iterations 2    # a shorter run
All the fields: hf-safety seas --help"""


def silence_bitsandbytes_cpu_kernel_notice() -> None:
    """
    Drops one message: bitsandbytes, which peft imports whenever it is installed, logs at import on CPUs with
    AVX512-BF16 that it could not fetch an optional CPU 4-bit kernel from the Hub; nothing here needs that kernel.
    Call it before transformers/peft import bitsandbytes.
    """
    bnb_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if _drop_bitsandbytes_cpu_kernel_notice not in bnb_logger.filters:
        bnb_logger.addFilter(_drop_bitsandbytes_cpu_kernel_notice)


def _drop_bitsandbytes_cpu_kernel_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


def _usage() -> str:
    lines = ["usage: hf-safety <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, help_text in COMMANDS.items()]
    return "\n".join(lines)


def _demo(argv: list[str]) -> None:
    from .toy.demo import DemoConfig, run_demo

    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="hf-safety demo", description=COMMANDS["demo"])
    parser.add_argument(
        "--method",
        choices=["derta", "seas"],
        default="derta",
        help="derta (default): SFT vs harmful-prefix vs DeRTa under forced harmful prefixes and harm deep inside a "
        "benign-looking answer; seas: the toy SEAS world, red team vs target over rounds",
    )
    parser.add_argument("--output-dir", default=None, help="default: outputs/demo (derta), outputs/seas-demo (seas)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--pretrain-epochs", type=int, default=defaults.pretrain_epochs, help="derta only")
    parser.add_argument("--safety-epochs", type=int, default=defaults.safety_epochs, help="derta only")
    parser.add_argument("--num-iterations", type=int, default=3, help="seas only: SEAS rounds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.method == "seas":
        from .toy.seas_demo import SEASDemoConfig, run_seas_demo

        run_seas_demo(
            config=SEASDemoConfig(
                output_dir=args.output_dir or SEASDemoConfig.output_dir,
                seed=args.seed,
                num_iterations=args.num_iterations,
                progress=not args.no_progress,
            )
        )
        return
    run_demo(
        DemoConfig(
            output_dir=args.output_dir or defaults.output_dir,
            seed=args.seed,
            pretrain_epochs=args.pretrain_epochs,
            safety_epochs=args.safety_epochs,
            progress=not args.no_progress,
        )
    )


def _eval(argv: list[str]) -> None:
    from trl import TrlParser

    from .eval import SafetyEvalConfig, evaluate_safety

    parser = TrlParser(SafetyEvalConfig, prog="hf-safety eval", description=COMMANDS["eval"])
    (config,) = parser.parse_args_and_config(argv)
    if not config.model:
        parser.error(
            "--model is required (a Hub id, a local folder or a toy:// model), on the command line or in --config"
        )
    if not config.suites:
        parser.error("--suites is required (e.g. --suites advbench xstest), on the command line or in --config")
    report = evaluate_safety(config.model, config.tokenizer, config=config)
    print(report.summary_markdown())
    print(f"\nwritten to {config.output_dir}" if config.output_dir else "\n(no --output_dir: nothing written)")


def _data(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print(
            "usage: hf-safety data build (--config SPEC.yaml | --builder NAME) --output PATH [...]\n"
            "  see: hf-safety data build --help",
            file=sys.stderr,
        )
        return 2
    from .scripts.data import run as run_data_build

    run_data_build(argv[1:])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"hf-safety: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if argv in (["derta"], ["seas"]):  # nothing to train: say how (the defaults would only fail validation)
        print(DERTA_USAGE if argv == ["derta"] else SEAS_USAGE, file=sys.stderr)
        return 2
    silence_bitsandbytes_cpu_kernel_notice()
    import hf_safety.toy  # noqa: F401  (registers the toy:// model names with the model loader)

    if argv[0] == "derta":
        from .scripts.derta import run

        run(argv[1:])
    elif argv[0] == "seas":
        from .scripts.seas import run as run_seas

        run_seas(argv[1:])
    elif argv[0] == "demo":
        _demo(argv[1:])
    elif argv[0] == "eval":
        _eval(argv[1:])
    elif argv[0] == "data":
        return _data(argv[1:])
    elif argv[0] == "push":
        from .scripts.push import run as run_push

        run_push(argv[1:])
    elif argv[0] == "plan":
        from .plan import main as run_plan

        return run_plan(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
