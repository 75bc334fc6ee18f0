"""Markdown tables of a :class:`~agents.analysis.compare.stats.Comparison`: what the CLI prints, the report embeds."""

from __future__ import annotations

from collections.abc import Sequence

from .stats import AGGREGATES, ALL_OOD, Comparison, Estimate

METRIC_TITLES = {"return": "Return", "success": "Success rate"}
AGGREGATE_TITLES = {"iqm": "IQM", "mean": "mean"}


def _cell(estimate: Estimate | None) -> str:
    """``0.812 [0.750, 0.900]``, or ``-`` when missing."""
    if estimate is None:
        return "-"
    return f"{estimate.point:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _condition_title(condition: str) -> str:
    """Column title of a condition."""
    return "all OOD" if condition == ALL_OOD else condition


def metric_table(comparison: Comparison, metric: str) -> str:
    """Markdown table of one metric: a row per model x aggregate, a column per condition, ``point [low, high]``."""
    index = {(e.model, e.condition, e.aggregate): e for e in comparison.estimates if e.metric == metric}
    header = ["model", "aggregate", *map(_condition_title, comparison.conditions)]
    rows = [
        [label, AGGREGATE_TITLES[agg], *(_cell(index.get((label, c, agg))) for c in comparison.conditions)]
        for label in comparison.models
        for agg in AGGREGATES
    ]
    return _md_table(header, rows)


def _p_cell(estimate: Estimate | None) -> str:
    """``0.62 [0.40, 0.82] p=0.31``, or ``-`` when missing."""
    if estimate is None:
        return "-"
    p_value = "" if estimate.p_value is None else f" p={estimate.p_value:.3g}"
    return f"{estimate.point:.2f} [{estimate.low:.2f}, {estimate.high:.2f}]{p_value}"


def improvement_table(comparison: Comparison, metric: str) -> str:
    """Markdown table of P(candidate > baseline) [95% CI] and its permutation p-value for one metric: a row per
    pair, a column per condition."""
    index = {(e.model, e.baseline, e.condition): e for e in comparison.improvements if e.metric == metric}
    pairs = list(dict.fromkeys((e.model, e.baseline) for e in comparison.improvements))
    header = ["model", "baseline", *map(_condition_title, comparison.conditions)]
    rows = [[m, b, *(_p_cell(index.get((m, b, c))) for c in comparison.conditions)] for m, b in pairs]
    return _md_table(header, rows)


def render_tables(comparison: Comparison) -> str:
    """The metric tables and P(improvement) tables as markdown (what the CLI prints)."""
    parts = []
    for metric, title in METRIC_TITLES.items():
        parts += [f"### {title}: IQM and mean over seeds, 95% CI", metric_table(comparison, metric)]
    if comparison.improvements:
        for metric, title in METRIC_TITLES.items():
            parts += [f"### P(improvement), {title.lower()}", improvement_table(comparison, metric)]
    else:
        parts.append("P(improvement): not computed (needs a RIM model and an LSTM baseline).")
    return "\n\n".join(parts) + "\n"
