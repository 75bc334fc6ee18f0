"""Compare finished runs (RIM vs LSTM) with stratified-bootstrap confidence intervals (rliable).

A run folder (written by :func:`agents.experiment.run.train`) holds ``config.yaml`` and
``eval.json`` (the final deterministic evaluation of every test condition), and usually
``ood_curves.json`` (periodic evaluations during training). For each model (runs that
differ only in their seed) and condition, the final ``mean_return`` and ``mean_success``
are aggregated over seeds: interquartile mean (IQM) and mean with 95% stratified-bootstrap
CIs, the probability of improvement of every RIM model over every LSTM model, and
learning curves with bootstrap bands. :func:`write_report` writes ``report.md``,
``summary.csv``, ``summary.json``, ``learning_curves.png`` and ``ood_bars.png``.

Usage::

    comparison, files = compare(["multirun/2026-11-28/12-00-00"], out_dir="compare", reps=2000)
    log_to_wandb(comparison, files, logger_config(comparison.runs, "auto"))

Note on rliable 1.2: its bootstraps draw their indices from NumPy's *global* generator
(``np.random.choice``), ignoring ``random_state``; :func:`compare_runs` seeds it for each
estimate and restores the previous global state afterwards.

Modules: :mod:`~agents.analysis.compare.runs` (finding, loading, labelling and grouping run folders),
:mod:`~agents.analysis.compare.stats` (bootstrap statistics and the :class:`Comparison` data classes),
:mod:`~agents.analysis.compare.tables` (markdown tables), :mod:`~agents.analysis.compare.plots` (figures),
:mod:`~agents.analysis.compare.report` (the report folder) and :mod:`~agents.analysis.compare.wandb_log` (W&B).
Every public name is re-exported here: ``from agents.analysis.compare import compare_runs`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .plots import plot_learning_curves, plot_ood_bars
from .report import SUMMARY_FIELDS, ReportFiles, render_report, summary_rows, write_report
from .runs import CORE_ORDER, METRICS, Run, find_runs, group_runs, label_runs, load_run, load_runs
from .stats import (
    AGGREGATES,
    ALL_OOD,
    BASELINE_CORES,
    CANDIDATE_PREFIX,
    IID,
    P_IMPROVEMENT,
    Comparison,
    Curve,
    Estimate,
    compare_runs,
)
from .stats import _iqm_columns as _iqm_columns  # re-exported for the tests
from .stats import _probability_of_improvement as _probability_of_improvement  # re-exported for the tests
from .tables import AGGREGATE_TITLES, METRIC_TITLES, improvement_table, metric_table, render_tables
from .wandb_log import DEFAULT_PROJECT, log_to_wandb, logger_config

__all__ = [
    "AGGREGATES",
    "AGGREGATE_TITLES",
    "ALL_OOD",
    "BASELINE_CORES",
    "CANDIDATE_PREFIX",
    "CORE_ORDER",
    "DEFAULT_PROJECT",
    "IID",
    "METRICS",
    "METRIC_TITLES",
    "P_IMPROVEMENT",
    "SUMMARY_FIELDS",
    "Comparison",
    "Curve",
    "Estimate",
    "ReportFiles",
    "Run",
    "compare",
    "compare_runs",
    "find_runs",
    "group_runs",
    "improvement_table",
    "label_runs",
    "load_run",
    "load_runs",
    "log_to_wandb",
    "logger_config",
    "metric_table",
    "plot_learning_curves",
    "plot_ood_bars",
    "render_report",
    "render_tables",
    "summary_rows",
    "write_report",
]


def compare(
    paths: Iterable[str | Path], out_dir: str | Path | None = None, reps: int = 2000, seed: int = 0
) -> tuple[Comparison, ReportFiles]:
    """Load, label and group the runs under ``paths``, compare them and write the report.

    :param out_dir: where the report goes; default ``<first path>/compare``.
    :raises ValueError: if no finished run is found, runs mix splits or a model repeats a seed.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no paths given")
    comparison = compare_runs(group_runs(load_runs(paths)), reps=reps, seed=seed)
    files = write_report(comparison, out_dir if out_dir is not None else paths[0] / "compare")
    return comparison, files
