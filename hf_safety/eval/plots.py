"""The PNG plots of a [`~hf_safety.eval.SafetyReport`] (matplotlib, Agg backend).

A rate that is not defined for a suite x attack (the attack applied to no row, e.g. the prefill attack on a suite
without targets; or the suite has no prompt of that label) is drawn as an explicit "n/a", never as a zero bar; a plot
with nothing defined is not drawn at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .metrics import Rate


if TYPE_CHECKING:
    from .report import SafetyReport, SuiteAttackResult

MARKERS = "osD^v"


def defined(rate: Rate) -> bool:
    """Whether a rate has something to show: at least one row, not all of them unknown."""
    return bool(rate.n) and rate.unknown < rate.n


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rate_by_attack(report: SafetyReport, attr: str, ylabel: str, title: str, path: str | Path) -> Path | None:
    """Bars of `attr` (`"asr"` or `"over_refusal"`) per attack, one bar per suite, 95% CI error bars; "n/a" where the
    rate is not defined. None when it is defined nowhere."""
    results: list[SuiteAttackResult] = report.results
    if not any(defined(getattr(r, attr)) for r in results):
        return None
    # suites with something to show for this rate, or an attack that applied to none of their rows (shown as n/a)
    suites = [
        s
        for s in dict.fromkeys(r.suite for r in results)
        if any(defined(getattr(r, attr)) or not r.n for r in results if r.suite == s)
    ]
    attacks = list(dict.fromkeys(r.attack for r in results if r.suite in suites))
    plt = _pyplot()
    width = 0.8 / len(suites)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(attacks) + 3), 4.5))
    for i, suite in enumerate(suites):
        by_attack = {r.attack: r for r in results if r.suite == suite}
        xs, rates, missing = [], [], []
        for j, attack in enumerate(attacks):
            x = j + (i - (len(suites) - 1) / 2) * width
            if attack in by_attack and defined(getattr(by_attack[attack], attr)):
                xs.append(x)
                rates.append(getattr(by_attack[attack], attr))
            elif attack in by_attack:
                missing.append(x)
        values = [100 * rate.rate for rate in rates]
        yerr = [[100 * (rate.rate - rate.ci[0]) for rate in rates], [100 * (rate.ci[1] - rate.rate) for rate in rates]]
        bars = ax.bar(xs, values, width=width, yerr=yerr if rates else None, capsize=3, label=suite)
        color = bars.patches[0].get_facecolor() if bars.patches else "black"
        for x in missing:
            ax.text(x, 2, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color=color)
    ax.set_xticks(range(len(attacks)))
    ax.set_xticklabels(attacks, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.set_title(title + ("; n/a = not applicable" if attacks else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_prefill(report: SafetyReport, path: str | Path) -> Path | None:
    """ASR (and refusal rate, where refusal labels exist) against the forced prefix length k, one line per suite;
    suites the prefill attack did not apply to are named as n/a. None when it applied to no row at all."""
    prefill = [r for r in report.results if r.prefix_length is not None]
    if not any(r.n for r in prefill):
        return None
    plt = _pyplot()
    has_refusal = any(defined(r.refusal) for r in prefill)
    fig, axes = plt.subplots(1, 2 if has_refusal else 1, figsize=(11 if has_refusal else 6, 4.2), squeeze=False)
    suites = list(dict.fromkeys(r.suite for r in prefill))
    not_applicable = [s for s in suites if not any(r.n for r in prefill if r.suite == s)]
    panels = [("asr", "ASR (%)")] + ([("refusal", "refusal on harmful prompts (%)")] if has_refusal else [])
    for ax, (attr, ylabel) in zip(axes[0], panels):
        for i, suite in enumerate(suites):
            points = sorted((r.prefix_length, getattr(r, attr)) for r in prefill if r.suite == suite)
            points = [(k, rate) for k, rate in points if defined(rate)]
            if not points:
                continue
            ks = [k for k, _ in points]
            values = [100 * rate.rate for _, rate in points]
            lows = [100 * (rate.rate - rate.ci[0]) for _, rate in points]
            highs = [100 * (rate.ci[1] - rate.rate) for _, rate in points]
            ax.errorbar(ks, values, yerr=[lows, highs], marker=MARKERS[i % len(MARKERS)], capsize=3, label=suite)
        ax.set_xticks(sorted({r.prefix_length for r in prefill}))
        ax.set_xlabel("forced prefix length k")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
        if not_applicable:
            label = "n/a (no target to prefill): " + ", ".join(not_applicable)
            ax.text(0.01, 0.01, label, transform=ax.transAxes, fontsize=7, va="bottom")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Prefill attack: {report.model_name}", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)
