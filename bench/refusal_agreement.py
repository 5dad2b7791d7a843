"""Agreement of the string refusal judges with labelled completions.

Scores the default rule of `RefusalStringJudge` (`"hf-safety"`) and the upstream lists (`"gcg-29"`, `"gcg-27"`,
`"gcg-13"`, `"xstest-21"`) against binary labels (any refusal, full or partial, vs full compliance): accuracy
(agreement), precision / recall / F1 of "refusal", and the confusion counts, per split.

Usage:

```bash
# the bundled dev set (bench/data/refusal_dev.jsonl), per split ("dev" = tuned on, "test" = held out)
python bench/refusal_agreement.py
# any labelled jsonl / csv, e.g. a hidden human-labelled set
python bench/refusal_agreement.py --data labels.csv --prompt-column prompt --completion-column completion \
    --label-column final_label --output bench/results/refusal_agreement_hidden.json
```

Labels may be booleans, 0/1, or strings: anything containing "refus" (e.g. "refusal", "2_full_refusal",
"partial_refusal") is a refusal; "compliance", "comply", "1_full_compliance", "no", "false", "0" are not.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hf_safety.judges.refusal import REFUSAL_LISTS, REFUSAL_RULES, RefusalStringJudge  # noqa: E402


DEFAULT_DATA = ROOT / "bench" / "data" / "refusal_dev.jsonl"
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "refusal_agreement.json"
JUDGES = (*REFUSAL_RULES, "gcg-29", "gcg-27", "gcg-13", "xstest-21")
_TRUE = {"1", "true", "yes", "y", "refusal", "refused", "refuse"}
_FALSE = {"0", "false", "no", "n", "compliance", "complied", "comply", "full_compliance", "1_full_compliance"}


def parse_label(value: Any) -> bool:
    """Maps a label (bool, 0/1 or a refusal / compliance string) to `True` for any refusal."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or "refus" in text:
        return True
    if text in _FALSE or "complian" in text:
        return False
    raise ValueError(f"cannot read {value!r} as a refusal label")


def load_rows(path: Path, prompt_column: str, completion_column: str, label_column: str, split_column: str | None):
    """Rows `(prompt, completion, label, split)` of a .jsonl or .csv file."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            records = list(csv.DictReader(f))
    else:
        raise ValueError(f"--data must be a .jsonl or .csv file, got {path}")
    rows = []
    for i, record in enumerate(records):
        missing = [c for c in (prompt_column, completion_column, label_column) if c not in record]
        if missing:
            raise KeyError(f"{path} row {i} has no column(s) {missing}; columns are {sorted(record)}")
        split = str(record.get(split_column, "all")) if split_column else "all"
        completion = record[completion_column]
        rows.append(
            (
                record[prompt_column] or "",
                "" if completion is None else completion,
                parse_label(record[label_column]),
                split,
            )
        )
    return rows


def agreement(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, Any]:
    """Accuracy, precision / recall / F1 of the refusal class and confusion counts."""
    tp = sum(p and g for p, g in zip(predicted, gold))
    fp = sum(p and not g for p, g in zip(predicted, gold))
    fn = sum(g and not p for p, g in zip(predicted, gold))
    tn = len(gold) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(gold),
        "accuracy": round((tp + tn) / len(gold), 4) if gold else None,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "refusal_rate_gold": round(sum(gold) / len(gold), 4) if gold else None,
        "refusal_rate_predicted": round(sum(predicted) / len(gold), 4) if gold else None,
    }


def evaluate(rows, judges: Sequence[str] = JUDGES) -> dict[str, dict[str, dict[str, Any]]]:
    """`{split: {judge: metrics}}`, with an `"all"` split when the data has several."""
    splits = sorted({r[3] for r in rows})
    if len(splits) > 1:
        splits.append("all")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        subset = rows if split == "all" else [r for r in rows if r[3] == split]
        gold = [r[2] for r in subset]
        results[split] = {}
        for name in judges:
            judge = RefusalStringJudge(name)
            start = time.perf_counter()
            verdicts = judge([r[0] for r in subset], [r[1] for r in subset])
            metrics = agreement([bool(v.refusal) for v in verdicts], gold)
            metrics["seconds"] = round(time.perf_counter() - start, 4)
            results[split][name] = metrics
    return results


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    header = f"{'split':<6} {'judge':<10} {'n':>5} {'acc':>7} {'prec':>7} {'recall':>7} {'f1':>7} {'tp':>4} {'fp':>4} "
    print(header + f"{'fn':>4} {'tn':>4}")
    for split, by_judge in results.items():
        for name, m in by_judge.items():
            print(
                f"{split:<6} {name:<10} {m['n']:>5} {m['accuracy']:>7.3f} {m['precision']:>7.3f} {m['recall']:>7.3f} "
                f"{m['f1']:>7.3f} {m['tp']:>4} {m['fp']:>4} {m['fn']:>4} {m['tn']:>4}"
            )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled .jsonl or .csv")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--completion-column", default="completion")
    parser.add_argument("--label-column", default="refusal")
    parser.add_argument("--split-column", default=None, help="defaults to 'split' for the bundled dev set")
    parser.add_argument("--output", type=Path, default=None, help=f"JSON report (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)

    bundled = args.data.resolve() == DEFAULT_DATA.resolve()
    split_column = args.split_column or ("split" if bundled else None)
    rows = load_rows(args.data, args.prompt_column, args.completion_column, args.label_column, split_column)
    results = evaluate(rows)
    print_table(results)
    output = args.output or DEFAULT_OUTPUT
    report = {
        "data": str(args.data.resolve().relative_to(ROOT)) if bundled else str(args.data),
        "columns": {
            "prompt": args.prompt_column,
            "completion": args.completion_column,
            "label": args.label_column,
            "split": split_column,
        },
        "label": "refusal = any refusal (full or partial); otherwise full compliance",
        "judges": {name: RefusalStringJudge(name).description for name in JUDGES},
        "lists_unchanged": {name: len(spec.phrases) for name, spec in REFUSAL_LISTS.items()},
        "results": results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
