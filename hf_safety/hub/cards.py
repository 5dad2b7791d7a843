"""Model and dataset cards of hf_safety runs, rendered from the Jinja templates in `hf_safety/model_cards/` with
`huggingface_hub.ModelCard.from_template` / `DatasetCard.from_template` (the YAML metadata comes from
`ModelCardData` / `DatasetCardData`).

A card never holds a token or a local path: a model or dataset read from a folder is named by the folder's name only
and left out of the metadata (`base_model`, `datasets` and `source_datasets` list Hub ids only), hyper-parameters go
through an allow-list and are scrubbed, and the rendered text is scrubbed of anything shaped like a token.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from .metadata import (
    framework_versions,
    hub_id,
    is_local,
    known_tokens,
    path_tail,
    public_hyperparameters,
    public_name,
    redact,
    scrub_text,
)
from .papers import DERTA_PAPER, SEAS_PAPER, TRL_CITATION


TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "model_cards"
SEAS_TABLES = ("attack_log", "red_team_pairs", "target_pairs")
SEAS_SIDES = ("target", "red_team")
_SIDE_TAGS = {"target": ["safety"], "red_team": ["red-teaming"]}
GATE_PROMPT = (
    "This dataset holds harmful requests and model answers collected for safety research (red-teaming and refusal "
    "training). By requesting access you agree to use it only for research on making models safer."
)


def _template(name: str) -> str:
    return str(TEMPLATES_DIR / name)


def _title(name: str | None, default: str = "model") -> str:
    """A model or dataset name fit for a heading: a local path by its last component."""
    if not name:
        return default
    return (path_tail(name) or default) if is_local(name) else scrub_text(name)


def _tags(*groups: Iterable[str] | str | None) -> list[str]:
    tags: list[str] = []
    for group in groups:
        for tag in [group] if isinstance(group, str) else group or ():
            tag = scrub_text(str(tag))
            if tag and tag not in tags:
                tags.append(tag)
    return tags


def _finish(card_class: type, card: Any, secrets: Sequence[str] = ()) -> Any:
    """The rendered card with tokens removed (pattern and known values), parsed again so `.data` matches the text."""
    return card_class(redact(card.content, [*secrets, *known_tokens()]))


def _cell(value: Any) -> str:
    """A value as a Markdown table cell: lists comma-separated, `|` escaped."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    elif isinstance(value, dict):
        value = ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _rate_cell(rate: Any) -> str:
    if not rate.n or rate.unknown == rate.n:
        return "n/a"
    low, high = rate.ci
    return f"{100 * rate.rate:.1f}% ({100 * low:.1f}–{100 * high:.1f})"


def _eval_context(report: Any) -> dict[str, Any] | None:
    """The evaluation section of a model card from a [`~hf_safety.eval.SafetyReport`]: judge, rows, notes."""
    if report is None:
        return None
    rows = [
        {
            "suite": scrub_text(r.suite),
            "attack": scrub_text(r.attack),
            "n": r.n,
            "asr": _rate_cell(r.asr),
            "unknown": _pct(r.asr.unknown_rate) if r.asr.n else "n/a",
            "refusal": _rate_cell(r.refusal),
            "over_refusal": _rate_cell(r.over_refusal),
        }
        for r in report.results
    ]
    judge = report.judge.get("name") or report.judge.get("description") or "unknown"
    return {
        "judge": scrub_text(str(judge)),
        "rows": rows,
        "notes": [scrub_text(note) for note in report.notes],
        "date": report.created_at,
    }


def _evaluation_section(report: Any) -> str | None:
    """The body of a model card's "Evaluation" section for a `SafetyReport` (`model_cards/evaluation_section.md`)."""
    context = _eval_context(report)
    if context is None:
        return None
    template = jinja2.Template(Path(_template("evaluation_section.md")).read_text(), keep_trailing_newline=True)
    return template.render(evaluation=context).strip()


def _eval_results(report: Any) -> list | None:
    """`report.eval_results()` for the `model-index`, with suite names, attack keys and judge names scrubbed."""
    if report is None:
        return None
    results = report.eval_results()
    for result in results:
        for name in ("dataset_type", "dataset_name", "metric_config", "metric_name"):
            value = getattr(result, name, None)
            if isinstance(value, str):
                setattr(result, name, scrub_text(value) if not is_local(value) else path_tail(value) or "local")
        if isinstance(result.metric_args, dict) and isinstance(result.metric_args.get("judge"), str):
            result.metric_args["judge"] = scrub_text(result.metric_args["judge"])
    return results or None


def _model_card(
    template: str,
    *,
    base_model: str | None,
    model_name: str,
    hub_model_id: str | None,
    dataset_names: Iterable[str] | str | None,
    hyperparameters: Mapping[str, Any],
    eval_report: Any,
    adapter: bool,
    license: str | None,
    tags: Iterable[str] | str | None,
    method_tags: Sequence[str],
    paper: Mapping[str, str],
    **context: Any,
) -> ModelCard:
    name = _title(model_name)
    datasets = [dataset_names] if isinstance(dataset_names, str) else [d for d in dataset_names or () if d]
    repo_id = hub_id(hub_model_id) or name
    eval_results = _eval_results(eval_report)
    data = ModelCardData(
        model_name=name,
        base_model=hub_id(base_model),
        datasets=[d for d in datasets if hub_id(d)] or None,
        library_name="peft" if adapter else "transformers",
        license=license,
        pipeline_tag="text-generation",
        tags=_tags("hf-safety", method_tags, "trl", tags),
        eval_results=eval_results,
    )
    card = ModelCard.from_template(
        data,
        template_path=_template(template),
        model_name=name,
        repo_id=repo_id,
        base_model_prose=_model_link(base_model),
        dataset_prose=[_dataset_link(d) for d in datasets],
        hyperparameters={key: _cell(value) for key, value in public_hyperparameters(hyperparameters).items()},
        evaluation=_evaluation_section(eval_report),
        adapter=adapter,
        versions=framework_versions(),
        paper=paper,
        trl_citation=TRL_CITATION,
        **context,
    )
    return _finish(ModelCard, card, [str(v) for k, v in hyperparameters.items() if "token" in k.lower() and v])


def _model_link(name: str | None) -> str:
    """The base model in prose: a Hub id as a link, a registered name as code, a local folder by its name only."""
    repo = hub_id(name)
    return f"[{repo}](https://huggingface.co/{repo})" if repo else public_name(name, "model")


def _dataset_link(name: str) -> str:
    repo = hub_id(name)
    return f"[{repo}](https://huggingface.co/datasets/{repo})" if repo else public_name(name, "dataset")


_EVALUATION_SECTION = re.compile(r"(^## Evaluation\n\n).*?(?=^## )", re.DOTALL | re.MULTILINE)


def add_eval_report(card: ModelCard | str, report: Any) -> ModelCard:
    """
    A model card (ours, e.g. the `README.md` a trainer wrote) with a safety evaluation added: the "Evaluation"
    section's table and the `model-index` metadata from a [`~hf_safety.eval.SafetyReport`] (e.g. the `report.json`
    that `hf-safety eval --output_dir` writes, loaded with `SafetyReport.load`).
    """
    text = str(card)
    if not _EVALUATION_SECTION.search(text):
        raise ValueError("the card has no '## Evaluation' section: add_eval_report takes the cards of hf_safety")
    section = _evaluation_section(report)
    updated = ModelCard(_EVALUATION_SECTION.sub(lambda m: m.group(1) + section + "\n\n", text, count=1))
    updated.data.eval_results = _eval_results(report)
    updated.data.model_name = updated.data.model_name or _title(report.model_name)
    return _finish(ModelCard, ModelCard(updated.content))


def derta_model_card(
    *,
    base_model: str | None,
    model_name: str,
    hub_model_id: str | None = None,
    dataset_names: Iterable[str] | str = (),
    hyperparameters: Mapping[str, Any],
    eval_report: Any = None,
    adapter: bool = False,
    license: str | None = None,
    tags: Iterable[str] | str = (),
) -> ModelCard:
    """
    The model card of a DeRTa-trained model: the method and its paper, the base model, the training data, a table of
    hyper-parameters, framework versions, intended use and limits, and the safety evaluation when given.

    Args:
        base_model: the model trained from, as given to the trainer (a Hub id goes to the `base_model` metadata; a
            local folder is named by its folder's name only; a registered name such as `toy://...` in prose only).
        model_name: the trained model's name (the card's title).
        hub_model_id: the repo it is pushed to (used in the quick-start snippet; default: `model_name`).
        dataset_names: the training data (Hub ids go to the `datasets` metadata).
        hyperparameters: settings to list (e.g. from [`~hf_safety.hub.metadata.hyperparameters_from_args`]); secrets
            and path-valued settings are dropped, values scrubbed.
        eval_report: a [`~hf_safety.eval.SafetyReport`]: its results as a table and as the `model-index`.
        adapter: whether the repo holds a PEFT adapter (`library_name: peft`) rather than full weights.
        license: the `license` metadata (e.g. the base model's).
        tags: extra tags (`hf-safety`, `derta`, `trl` and `sft` are always there).

    Returns:
        `huggingface_hub.ModelCard`: `card.save(path)` or `card.push_to_hub(repo_id)`.
    """
    return _model_card(
        "derta_model_card.md",
        base_model=base_model,
        model_name=model_name,
        hub_model_id=hub_model_id,
        dataset_names=dataset_names,
        hyperparameters=hyperparameters,
        eval_report=eval_report,
        adapter=adapter,
        license=license,
        tags=tags,
        method_tags=["derta", "sft", "safety"],
        paper=DERTA_PAPER,
    )


def _round_row(metrics: Mapping[str, Any], side: str) -> dict[str, Any]:
    def count(key: str) -> Any:
        value = metrics.get(key)
        return "n/a" if value is None else value

    return {
        "iteration": metrics.get("iteration"),
        "asr": _pct(metrics.get("red_team_asr")),
        "prompts": count("num_adversarial_prompts"),
        "responses": count("num_responses"),
        "unknown": count("num_unknown_verdicts"),
        "red_team_pairs": count("num_red_team_pairs"),
        "target_pairs": count("num_target_pairs"),
        "trained_rows": count(f"trained_{side}_rows"),
        "target_asr": _pct(metrics.get("target_asr")),
        "over_refusal": _pct(metrics.get("target_over_refusal")),
    }


def seas_model_card(
    *,
    side: str,
    iteration: int | None,
    base_model: str | None,
    model_name: str,
    hub_model_id: str | None = None,
    dataset_names: Iterable[str] | str = (),
    hyperparameters: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]] | None = None,
    eval_report: Any = None,
    adapter: bool = False,
    license: str | None = None,
    tags: Iterable[str] | str = (),
) -> ModelCard:
    """
    The model card of one side of a SEAS run: the target (T) or the red team (R), after round `iteration` (None: the
    final model of the run). It states the round, the DPO reference (the side's previous iterate), the rounds' attack
    statistics and pair counts, and, for the target, the safety evaluation.

    Args:
        side: `"target"` or `"red_team"`.
        iteration: the round (0-based) whose model this is; None for the run's final model.
        base_model: the side's starting model (T0 or R0), as given to the trainer (see [`derta_model_card`]).
        model_name, hub_model_id, dataset_names, hyperparameters, eval_report, adapter, license, tags: as in
            [`derta_model_card`] (`dataset_names`: the seed pool and any general preference data).
        rounds: the per-round metrics SEAS writes to `results.json` (`iteration`, `red_team_asr`,
            `num_adversarial_prompts`, `num_responses`, `num_red_team_pairs`, `num_target_pairs`, `target_asr`, ...),
            rounds up to `iteration` are shown.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    if side not in SEAS_SIDES:
        raise ValueError(f"side must be one of {SEAS_SIDES}, got {side!r}")
    shown = [r for r in rounds or () if iteration is None or r.get("iteration", 0) <= iteration]
    last = iteration if iteration is not None else (max(r.get("iteration", 0) for r in shown) if shown else None)
    this_round = next((r for r in shown if r.get("iteration") == last), None)
    return _model_card(
        "seas_model_card.md",
        base_model=base_model,
        model_name=model_name,
        hub_model_id=hub_model_id,
        dataset_names=dataset_names,
        hyperparameters=hyperparameters,
        eval_report=eval_report,
        adapter=adapter,
        license=license,
        tags=tags,
        method_tags=["seas", "dpo", *_SIDE_TAGS[side]],
        paper=SEAS_PAPER,
        side=side,
        side_name="red team" if side == "red_team" else "target",
        iteration=last,
        final=iteration is None,
        rounds=[_round_row(r, side) for r in shown],
        this_round=_round_row(this_round, side) if this_round else None,
        judge=scrub_text(str(this_round["judge"])) if this_round and this_round.get("judge") else None,
    )


# -- dataset cards ------------------------------------------------------------------------------------------------


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _parquet_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows if path.is_file() else None


def _verdict_counts(path: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    values = pq.read_table(path, columns=["unsafe"]).column("unsafe").to_pylist() if path.is_file() else []
    return {
        "unsafe": sum(v is True for v in values),
        "safe": sum(v is False for v in values),
        "unknown": sum(v is None for v in values),
    }


def _seas_rounds(root: Path) -> list[dict[str, Any]]:
    """Per round of a SEAS output folder: row counts of each table, verdict counts and the attack stats."""
    found = []
    for folder in root.glob("iteration_*"):
        match = re.fullmatch(r"iteration_(\d+)", folder.name)
        if match and folder.is_dir() and any((folder / f"{t}.parquet").is_file() for t in SEAS_TABLES):
            found.append((int(match.group(1)), folder))
    rounds = []
    for i, folder in sorted(found):
        stats_file = folder / "attack_stats.json"
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        rows = {t: _parquet_rows(folder / f"{t}.parquet") for t in SEAS_TABLES}
        rounds.append(
            {
                "iteration": i,
                "split": folder.name,
                "rows": rows,
                "verdicts": _verdict_counts(folder / "attack_log.parquet"),
                "asr": _pct(stats.get("asr")),
                "num_seeds": stats.get("num_seeds", "n/a"),
                "num_adversarial_prompts": stats.get("num_adversarial_prompts", "n/a"),
                "num_dropped": stats.get("num_dropped_empty", 0) + stats.get("num_dropped_length", 0)
                if stats
                else "n/a",
            }
        )
    return rounds


def seas_dataset_card(
    seas_output_dir: str | os.PathLike,
    *,
    pretty_name: str | None = None,
    model_name: str | None = None,
    license: str | None = None,
    gated: bool = False,
) -> DatasetCard:
    """
    The dataset card of a SEAS run's data: per round, the attack log (every adversarial prompt, answer and verdict),
    the red team's preference pairs and the target's preference pairs, read from the run's
    `iteration_<i>/{attack_log,red_team_pairs,target_pairs}.parquet` and `attack_stats.json`.

    The `configs` metadata names one config per table with one split per round (`iteration_<i>`, data files at
    `iteration_<i>/<table>.parquet`), so the Hub viewer shows each table when the files are uploaded at the paths they
    have in the output folder.

    Args:
        seas_output_dir: the SEAS run's `output_dir`.
        pretty_name: the dataset's display name.
        model_name: the model the data were collected with (the target), named in prose (a local path by its
            folder's name only).
        license: the `license` metadata.
        gated: add a gating prompt (`extra_gated_prompt`); set the repo itself to gated when pushing.

    Returns:
        `huggingface_hub.DatasetCard`.
    """
    root = Path(seas_output_dir)
    rounds = _seas_rounds(root)
    if not rounds:
        raise FileNotFoundError(f"no SEAS round in {root}: expected iteration_<i>/attack_log.parquet files")
    configs = [
        {
            "config_name": table,
            "data_files": [
                {"split": r["split"], "path": f"{r['split']}/{table}.parquet"}
                for r in rounds
                if r["rows"][table] is not None
            ],
        }
        for table in SEAS_TABLES
        if any(r["rows"][table] is not None for r in rounds)
    ]
    totals = {t: sum(r["rows"][t] or 0 for r in rounds) for t in SEAS_TABLES}
    results_file = root / "results.json"
    metrics = json.loads(results_file.read_text()).get("rounds", []) if results_file.is_file() else []
    extra = {"extra_gated_prompt": GATE_PROMPT} if gated else {}
    data = DatasetCardData(
        license=license,
        pretty_name=pretty_name or "SEAS red-teaming data",
        task_categories=["text-generation"],
        tags=["hf-safety", "seas", "red-teaming", "safety", "dpo", "not-for-all-audiences"],
        size_categories=[_size_category(max(totals.values()))],
        configs=configs,
        **extra,
    )
    card = DatasetCard.from_template(
        data,
        template_path=_template("seas_dataset_card.md"),
        title=_title(pretty_name, "SEAS red-teaming data"),
        model_prose=_model_link(model_name) if model_name else None,
        rounds=rounds,
        totals=totals,
        target_asr={m.get("iteration"): _pct(m.get("target_asr")) for m in metrics if "target_asr" in m},
        gated=gated,
        paper=SEAS_PAPER,
        versions=framework_versions(),
    )
    return _finish(DatasetCard, card)


def _source_row(source: Mapping[str, Any] | Any) -> dict[str, Any]:
    """One source of a DeRTa mix: `name`/`id`, `builder`, `split` and the counts of its `SourceReport` (given as
    `report`, as the item itself, or as top-level keys)."""
    if not isinstance(source, Mapping):
        source = {"report": source}
    report = source.get("report")

    def get(key: str, default: Any = None) -> Any:
        value = source.get(key, getattr(report, key, None) if report is not None else None)
        return default if value is None else value

    name = source.get("name") or source.get("id") or get("source", "")
    counts = get("counts", {})
    skipped = get("num_skipped", len(get("skipped", [])))
    return {
        "name": _dataset_link(str(name)) if name else "a dataset given as an object",
        "hub_id": hub_id(str(name)) if name else None,
        "builder": scrub_text(str(get("builder", "n/a"))),
        "split": scrub_text(str(get("split", "n/a"))),
        "num_rows": get("num_rows", "n/a"),
        "num_harmful": get("num_harmful", "n/a"),
        "num_benign": get("num_benign", "n/a"),
        "num_skipped": skipped,
        "counts": ", ".join(f"{scrub_text(str(k))}: {v}" for k, v in counts.items()) or "",
    }


_MIX_COLUMNS = {
    "prompt": "the user request (a string, or a list of chat messages)",
    "chosen": "the safe answer: a refusal for a harmful request, the helpful answer for a benign one",
    "rejected": "the harmful answer (empty/None for a benign row)",
    "messages": "a whole conversation (benign SFT rows)",
    "is_harmful": "True when the row has a harmful answer (`rejected`): DeRTa trains refusals on these rows",
}


def _requested_rows(harmful_ratio: float | None, num_rows: int | None) -> str:
    if num_rows is not None:
        return str(num_rows)
    if harmful_ratio is None:
        return "every row of both sources"
    return "the largest mix at this ratio that the sources fill without repeating a row"


def derta_mix_dataset_card(
    dataset: Any,
    *,
    sources: Sequence[Mapping[str, Any] | Any],
    harmful_ratio: float | None,
    num_rows: int | None,
    seed: int,
    pretty_name: str | None = None,
    license: str | None = None,
) -> DatasetCard:
    """
    The dataset card of a DeRTa training mix (from [`~hf_safety.data.build_derta_mix`]): the sources and what their
    builders kept, the requested ratio and size, the columns, and how many rows are harmful (`is_harmful`).

    Args:
        dataset: the mix (a `datasets.Dataset` with an `is_harmful` column).
        sources: one entry per source: a dict with `name` (or `id`: a Hub id or a local path, named by its last
            component), `builder` (e.g. `"from_pku_saferlhf"`), `split`, and the builder's
            [`~hf_safety.data.SourceReport`] as `report` (or its counts `num_rows`, `num_harmful`, `num_benign`,
            `counts`, `num_skipped` as keys); or a `SourceReport` alone.
        harmful_ratio, num_rows, seed: the arguments the mix was built with (None: every row, see `build_derta_mix`).
        pretty_name: the dataset's display name.
        license: the `license` metadata (mind the sources' licenses).

    Returns:
        `huggingface_hub.DatasetCard`.
    """
    if "is_harmful" not in dataset.column_names:
        raise ValueError("the DeRTa mix needs an `is_harmful` column (see hf_safety.data.build_derta_mix)")
    total = len(dataset)
    num_harmful = sum(bool(v) for v in dataset["is_harmful"])
    first = dataset[0] if total else {}
    conversational = isinstance(first.get("prompt") or first.get("messages"), list)
    rows = [_source_row(s) for s in sources]
    data = DatasetCardData(
        license=license,
        pretty_name=pretty_name or "DeRTa training mix",
        task_categories=["text-generation"],
        tags=["hf-safety", "derta", "safety", "refusal", "not-for-all-audiences"],
        size_categories=[_size_category(total)],
        source_datasets=[r["hub_id"] for r in rows if r["hub_id"]] or None,
    )
    card = DatasetCard.from_template(
        data,
        template_path=_template("derta_mix_dataset_card.md"),
        title=_title(pretty_name, "DeRTa training mix"),
        sources=rows,
        num_rows=total,
        num_harmful=num_harmful,
        num_benign=total - num_harmful,
        harmful_share=_pct(num_harmful / total) if total else "n/a",
        harmful_ratio="the sources' own sizes" if harmful_ratio is None else f"{harmful_ratio:g}",
        requested_rows=_requested_rows(harmful_ratio, num_rows),
        seed=seed,
        conversational=conversational,
        columns=[(c, _MIX_COLUMNS.get(c, "carried over from a source")) for c in dataset.column_names],
        paper=DERTA_PAPER,
        versions=framework_versions(),
    )
    return _finish(DatasetCard, card)
