"""The report folder: ``report.md``, ``summary.csv``, ``summary.json`` and both figures, each written atomically."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agents.experiment.atomic import atomic_path, atomic_write_text

from .efficiency import DEFAULT_THRESHOLD, Efficiency, efficiencies, efficiency_table
from .plots import plot_learning_curves, plot_ood_bars
from .stats import ALL_OOD, Comparison
from .tables import render_tables

log = logging.getLogger("agents.analysis.compare")  # the package logger, as before the split into modules

SUMMARY_FIELDS = (
    "model", "baseline", "condition", "metric", "aggregate", "point", "low", "high", "n_seeds", "baseline_seeds",
    "p_value",
)  # fmt: skip


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out_dir: Path
    report: Path
    summary_csv: Path
    summary_json: Path
    learning_curves: Path
    ood_bars: Path
    efficiency: Path | None = None  # efficiency.json, when the runs have periodic iid evaluations


def summary_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One dict per estimate (IQM, mean, P(improvement)) with the :data:`SUMMARY_FIELDS` keys."""
    return [asdict(e) for e in [*comparison.estimates, *comparison.improvements]]


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` when possible (links in the report keep working)."""
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


def _models_section(comparison: Comparison, out_dir: Path) -> str:
    """Markdown list of the models with their seeds and run folders."""
    lines = []
    for label, runs in comparison.models.items():
        seeds = ", ".join(str(run.seed) for run in runs)
        lines.append(f"- **{label}** (core `{runs[0].core}`), {len(runs)} seeds: {seeds}")
        lines += [f"  - seed {run.seed}: `{_relative(run.path, out_dir)}`" for run in runs]
    return "\n".join(lines)


def render_report(comparison: Comparison, out_dir: Path, effs: Sequence[Efficiency] | None = None) -> str:
    """The full ``report.md`` text (run folder paths relative to ``out_dir``).

    :param effs: the models' sample efficiency (:func:`efficiencies`), computed here when ``None``.
    """
    conditions = ", ".join(f"`{c}`" for c in comparison.conditions if c != ALL_OOD)
    pooled = ", ".join(f"`{c}`" for c in comparison.pooled) or "none"
    intro = (
        f"# Comparison on split `{comparison.split}`\n\n"
        f"Final deterministic evaluation (`eval.json`) of {len(comparison.runs)} runs, aggregated over seeds per "
        f"model and condition. Conditions: {conditions}. 95% bootstrap confidence intervals "
        f"({comparison.reps} replications, seed {comparison.seed}): one condition at a time, rliable's "
        "stratified bootstrap over seeds; `all OOD` and every P(improvement), whole seeds resampled (all of a "
        "seed's conditions together: one policy scored them). IQM is the interquartile mean "
        "(25% trimmed mean; with fewer than 4 seeds it equals the mean). "
        f"`all OOD` pools the conditions {pooled} (IQM over seeds x conditions). "
        "P(improvement) is the probability that a random seed of the model scores higher than a random seed "
        "of the baseline on the condition (ties count half; averaged over the conditions for `all OOD`): 0.5 "
        "means no difference. p is its two-sided permutation test over whole seeds (exact up to 10 vs 10 "
        "seeds), not adjusted for the number of comparisons."
    )
    parts = [intro, "## Models", _models_section(comparison, out_dir), "## Results", render_tables(comparison).rstrip()]
    parts += [
        "## Figures",
        "Learning curves (mean return over seeds, 95% band): [learning_curves.png](learning_curves.png)\n\n"
        "![learning curves](learning_curves.png)",
        "IQM of the final return and success rate per condition, 95% CI: [ood_bars.png](ood_bars.png)\n\n"
        "![OOD bars](ood_bars.png)",
    ]
    effs = efficiencies(comparison.models) if effs is None else effs
    if effs:
        table = efficiency_table(effs, DEFAULT_THRESHOLD, [e.model for e in effs], comparison.reps, comparison.seed)
        parts += ["## Sample efficiency", table]
    if comparison.notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in comparison.notes)]
    return "\n\n".join(parts) + "\n"


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as CSV with the :data:`SUMMARY_FIELDS` columns."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_report(comparison: Comparison, out_dir: str | Path) -> ReportFiles:
    """Write ``report.md``, ``summary.csv``, ``summary.json``, ``learning_curves.png``, ``ood_bars.png``.

    Every file is written to a temporary name and renamed into place.

    :param out_dir: created if missing.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        out, out / "report.md", out / "summary.csv", out / "summary.json", out / "learning_curves.png",
        out / "ood_bars.png",
    )  # fmt: skip
    rows = summary_rows(comparison)
    atomic_write_text(files.summary_csv, _csv_text(rows))
    atomic_write_text(files.summary_json, json.dumps(rows, indent=2) + "\n")
    with atomic_path(files.learning_curves) as tmp:
        plot_learning_curves(comparison, tmp)
    with atomic_path(files.ood_bars) as tmp:
        plot_ood_bars(comparison, tmp)
    effs = efficiencies(comparison.models)
    if effs:
        rows = [{"threshold": DEFAULT_THRESHOLD, **asdict(e), "median": e.median, "reached": e.reached} for e in effs]
        files = replace(files, efficiency=out / "efficiency.json")
        atomic_write_text(out / "efficiency.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(files.report, render_report(comparison, out, effs))
    log.info("wrote the comparison report to %s", files.report)
    return files
