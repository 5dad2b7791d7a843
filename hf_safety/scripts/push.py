"""
`hf-safety push`: publish a trained model or a safety dataset to the Hub with its card (see `hf_safety.hub`).

```bash
hf-safety push model outputs/derta-llama3-8b-qlora --repo-id me/llama3-8b-derta-lora            # the LoRA adapter
hf-safety push model outputs/derta-llama3-8b-qlora --repo-id me/llama3-8b-derta --merged        # base + adapter
hf-safety push dataset outputs/seas-llama3-8b --repo-id me/seas-data --gated manual             # private, gated
hf-safety push dataset data/derta-mix --repo-id me/derta-mix                                    # a data build folder
hf-safety push staged outputs/derta-toy-hub                                                     # staged offline
```

Tokens come from `huggingface-cli login` / `HF_TOKEN`; they are never printed or written. Offline
(`HF_HUB_OFFLINE=1`) or with `--dry-run`, the files are staged (with `hub_upload.json`) and nothing is sent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from huggingface_hub import ModelCard


DESCRIPTION = "Publish a model (adapter or merged) or a safety dataset to the Hub, with its card"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo-id", required=True, help="the Hub repo, org/name")
    parser.add_argument("--gated", choices=["auto", "manual"], default=None, help="gate access to the repo")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--staging-dir", default=None, help="where to write what is uploaded (default: PATH-hub)")
    parser.add_argument("--dry-run", action="store_true", help="stage the files, send nothing")


def make_parser(prog: str = "hf-safety push") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    commands = parser.add_subparsers(dest="what", required=True)

    model = commands.add_parser("model", help="a saved model or LoRA adapter folder (trainer.save_model's output)")
    model.add_argument("path")
    _common(model)
    model.add_argument("--merged", action="store_true", help="upload the base merged with the adapter")
    model.add_argument("--with-adapter", action="store_true", help="with --merged: also the adapter, in adapter/")
    model.add_argument("--base-model", default=None, help="the base to merge into (default: the adapter's)")
    model.add_argument("--merge-dtype", default="auto", help="dtype to load the base in for merging, e.g. bfloat16")
    model.add_argument(
        "--eval-report",
        default=None,
        help="a report.json of `hf-safety eval`: its table and model-index go in the card",
    )
    model.add_argument("--license", default=None, help="the card's license (e.g. the base model's)")
    visibility = model.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=None)
    visibility.add_argument("--public", dest="private", action="store_false", help="(default: the account's)")

    dataset = commands.add_parser(
        "dataset", help="a SEAS run's output folder, or a `hf-safety data build` output (folder or file)"
    )
    dataset.add_argument("path")
    _common(dataset)
    dataset.add_argument(
        "--public", action="store_true", help="make harmful data public (it is private by default; consider --gated)"
    )
    dataset.add_argument("--license", default=None, help="the card's license (mind the sources' licenses)")
    dataset.add_argument("--pretty-name", default=None)

    staged = commands.add_parser("staged", help="push a folder staged earlier (offline or with --dry-run)")
    staged.add_argument("path")
    return parser


def _is_seas_output(path: Path) -> bool:
    return path.is_dir() and any(path.glob("iteration_*/attack_log.parquet"))


def push_dataset_path(args: argparse.Namespace):
    """A SEAS output folder (its per-round tables, `seas_dataset_card`), or a data build output (its rows and card)."""
    from ..data.loading import load_rows
    from ..hub import push_dataset, seas_dataset_card
    from ..hub.push import default_staging_dir
    from .data import build_card, read_build_report

    path = Path(args.path)
    common = dict(gated=args.gated, commit_message=args.commit_message, dry_run=args.dry_run, public=args.public)
    if _is_seas_output(path):
        card = seas_dataset_card(path, pretty_name=args.pretty_name, license=args.license, gated=bool(args.gated))
        return push_dataset(path, args.repo_id, card=card, staging_dir=args.staging_dir, **common)
    report = read_build_report(path)
    if report is None:
        raise SystemExit(
            f"{path}: not a SEAS output folder (iteration_*/attack_log.parquet) nor a `hf-safety data build` output "
            "(with its build report); push other data with hf_safety.hub.push_dataset and a card"
        )
    rows = load_rows(str(path)) if path.is_dir() else load_rows(str(path), "train")
    card = build_card(rows, report, pretty_name=args.pretty_name, license=args.license)
    staging_dir = args.staging_dir or default_staging_dir(path.parent / path.name.split(".")[0])  # a file: no suffix
    return push_dataset(rows, args.repo_id, card=card, staging_dir=staging_dir, **common)


def push_model_path(args: argparse.Namespace):
    """A model or adapter folder with the card its trainer wrote (`README.md`), merged on request."""
    from ..hub import add_eval_report, push_model

    path = Path(args.path)
    card = ModelCard.load(path / "README.md") if (path / "README.md").is_file() else None
    if card is not None and args.eval_report:
        from ..eval import SafetyReport

        card = add_eval_report(card, SafetyReport.load(args.eval_report))
    if card is not None and args.license:
        card.data.license = args.license
    if card is not None and args.merged and not args.with_adapter and (path / "adapter_config.json").is_file():
        card.data.library_name = "transformers"  # the adapter's card, for the merged weights
    if card is None and (args.eval_report or args.license):
        raise SystemExit(f"{path}/README.md not found: --eval-report and --license update the card a trainer wrote")
    return push_model(
        path,
        args.repo_id,
        card=card,
        merged=args.merged,
        adapter=True if args.with_adapter else None,
        base_model=args.base_model,
        merge_dtype=args.merge_dtype,
        private=args.private,
        gated=args.gated,
        commit_message=args.commit_message,
        staging_dir=args.staging_dir,
        dry_run=args.dry_run,
    )


def run(argv: list[str] | None = None):
    from ..hub import push_staged

    args = make_parser().parse_args(argv)
    if args.what == "model":
        result = push_model_path(args)
    elif args.what == "dataset":
        result = push_dataset_path(args)
    else:
        result = push_staged(args.path)
    print(result)
    print(json.dumps({"repo_id": result.repo_id, "private": result.private, "gated": result.gated}, default=str))
    return result
