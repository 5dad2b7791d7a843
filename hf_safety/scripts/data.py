"""
`hf-safety data build`: rows of the data contract from the public safety datasets (see `hf_safety.data.sources`).

```bash
# The DeRTa training mix the 8B recipe trains on (PKU-SafeRLHF pairs + UltraChat rows)
hf-safety data build --config recipes/data/derta-mix.yaml --output data/derta-mix
# One source, options as key=value
hf-safety data build --builder pku-saferlhf --option both_safe=drop --output pku.jsonl
```
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import yaml
from datasets import Dataset

from ..data.build import BUILDERS, BuildResult, DataBuildSpec, SourceSpec, build


DESCRIPTION = "Build rows of the data contract from the public safety datasets (a spec file or one builder)"


def make_parser(prog: str = "hf-safety data build") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="a data build spec (YAML), e.g. recipes/data/derta-mix.yaml")
    what.add_argument("--builder", choices=sorted(BUILDERS), help="one source, built with this builder")
    parser.add_argument("--source", help="--builder: a Hub dataset id or a local data file (default: the builder's)")
    parser.add_argument("--split", help="--builder: the split to load (default: the builder's)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--builder: a builder option, e.g. both_safe=drop, data_dir=harmless-base, skip_invalid_rows=true",
    )
    parser.add_argument("--num-rows", type=int, help="rows to keep (a mix: its size; one source: a seeded sample)")
    parser.add_argument("--harmful-ratio", type=float, help="a mix: the share of harmful rows")
    parser.add_argument("--seed", type=int, help="seed of every shuffle (default: the spec's, else 0)")
    parser.add_argument(
        "--output",
        required=True,
        help="a .jsonl or .parquet file, or a folder (parquet data, the dataset card and build_report.json)",
    )
    return parser


def spec_from_args(args: argparse.Namespace) -> DataBuildSpec:
    """The spec a command line names: the `--config` file with the overrides, or one `--builder`."""
    if args.config:
        spec = DataBuildSpec.load(args.config)
        if args.source or args.split or args.option:
            raise ValueError("--source, --split and --option go with --builder; with --config, edit the spec")
        if args.num_rows is not None:
            if spec.is_mix:
                spec.num_rows = args.num_rows
            else:
                spec.source.num_rows = args.num_rows
        if args.harmful_ratio is not None:
            spec.harmful_ratio = args.harmful_ratio
    else:
        options = {}
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--option takes KEY=VALUE, got {item!r}")
            options[key] = yaml.safe_load(value)  # true/false, numbers and null as YAML reads them
        source = SourceSpec(args.builder, args.source, args.split, args.num_rows, options)
        spec = DataBuildSpec(source=source)
        if args.harmful_ratio is not None:
            raise ValueError("--harmful-ratio is for a mix (--config with `harmful` and `helpful`)")
    if args.seed is not None:
        spec.seed = args.seed
    DataBuildSpec.__post_init__(spec)  # the overrides are checked as the spec was
    return spec


def build_report(result: BuildResult) -> dict:
    """What was built from what: each source as the spec named it, its report, and the totals."""
    spec = result.spec
    sources = {"source": spec.source} if not spec.is_mix else {"harmful": spec.harmful, "helpful": spec.helpful}
    report = {
        "sources": {
            role: {**s.describe(), "report": dataclasses.asdict(result.reports[role])} for role, s in sources.items()
        },
        "num_rows": len(result.dataset),
        "num_harmful": result.num_harmful,
        "seed": spec.seed,
    }
    if spec.is_mix:
        report.update(harmful_ratio=spec.harmful_ratio, mix_num_rows=spec.num_rows)
    return report


def read_build_report(path: str | Path) -> dict | None:
    """The build report written beside a `hf-safety data build` output (a folder or a file), or None."""
    path = Path(path)
    report = path / "build_report.json" if path.is_dir() else path.with_name(path.name + ".build.json")
    return json.loads(report.read_text()) if report.is_file() else None


def build_card(dataset: Dataset, report: dict, *, pretty_name: str | None = None, license: str | None = None):
    """The dataset card of a built dataset of preference rows (`is_harmful`), from its build report; None for
    rows without `is_harmful` (a seed pool, `messages` rows)."""
    from ..hub import derta_mix_dataset_card

    if "is_harmful" not in dataset.column_names:
        return None
    sources = [
        {"name": s["source"], "builder": s["builder"], "split": s["split"], **s["report"]}
        for s in report["sources"].values()
    ]
    return derta_mix_dataset_card(
        dataset,
        sources=sources,
        harmful_ratio=report.get("harmful_ratio"),
        num_rows=report.get("mix_num_rows"),
        seed=report["seed"],
        pretty_name=pretty_name or ("DeRTa training mix" if len(sources) > 1 else f"{sources[0]['builder']} rows"),
        license=license,
    )


def write_output(result: BuildResult, output: str | Path) -> list[Path]:
    """Writes the rows to a `.jsonl`/`.parquet` file (with `<name>.build.json` beside it), or to a folder (with the
    build report and the dataset card, `README.md`)."""
    output = Path(output)
    report = json.dumps(build_report(result), indent=2, default=str)
    if output.suffix in (".jsonl", ".parquet"):
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix == ".jsonl":
            result.dataset.to_json(output, lines=True, force_ascii=False)
        else:
            result.dataset.to_parquet(output)
        sidecar = output.with_name(output.name + ".build.json")
        sidecar.write_text(report)
        return [output, sidecar]
    data = output / "data" / "train-00000-of-00001.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    result.dataset.to_parquet(data)
    (output / "build_report.json").write_text(report)
    written = [data, output / "build_report.json"]
    card = build_card(result.dataset, json.loads(report))
    if card is not None:
        card.save(output / "README.md")
        written.append(output / "README.md")
    return written


def run(argv: list[str] | None = None) -> BuildResult:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        spec = spec_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    result = build(spec)
    print(result.summary())
    for path in write_output(result, args.output):
        print(f"wrote {path}")
    return result
