"""Figures of a :class:`~agents.analysis.compare.stats.Comparison`: learning curves and per-condition IQM bars.

Matplotlib is imported lazily and figures are rendered with the Agg canvas (no pyplot, no global backend switch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .stats import Comparison
from .tables import METRIC_TITLES, _condition_title

SELECTION_TITLES = {
    "switch_rate": "selection: within-episode switch rate (rollouts)",
    "usage_entropy": "selection: usage entropy (rollouts)",
    "collapse": "selection: collapse, Mod_Arch-style (rollouts)",
}


def _grid(n: int) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` subplots, at most 3 columns."""
    cols = max(1, min(3, n))
    return math.ceil(max(n, 1) / cols), cols


def _save(fig: Any, path: Path) -> None:
    """Render ``fig`` with the Agg canvas to ``path`` as PNG (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110)


def plot_learning_curves(comparison: Comparison, path: Path) -> None:
    """One subplot per condition, a line per model (mean return over seeds) with its 95% band; when RIM models
    recorded the selection statistics of their training rollouts, one more subplot per statistic beside them
    (the modularity curves: switch rate, usage entropy, collapse; :data:`SELECTION_TITLES`)."""
    from matplotlib.figure import Figure

    conditions = [c for c in comparison.conditions if any(curve.condition == c for curve in comparison.curves)]
    statistics = [s for s in SELECTION_TITLES if any(c.condition == s for c in comparison.selection_curves)]
    rows, cols = _grid(len(conditions) + len(statistics))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    if not conditions:
        fig.text(0.5, 0.5, "no learning curves (no ood_curves.json)", ha="center", va="center")
    colors = _model_colors(comparison)
    panels = [(c, comparison.curves, c, "mean return") for c in conditions]
    panels += [(s, comparison.selection_curves, SELECTION_TITLES[s], s.replace("_", " ")) for s in statistics]
    for i, (name, curves, title, ylabel) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for curve in (c for c in curves if c.condition == name):
            label = f"{curve.model} (n={curve.n_seeds})"
            ax.plot(curve.frames, curve.mean, marker=".", label=label, color=colors[curve.model])
            ax.fill_between(curve.frames, curve.low, curve.high, alpha=0.2, color=colors[curve.model])
        ax.set(title=title, xlabel="frames", ylabel=ylabel)
        ax.legend(fontsize="small")
    _save(fig, path)


def _model_colors(comparison: Comparison) -> dict[str, Any]:
    """A stable colour per model."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(comparison.models)}


def plot_ood_bars(comparison: Comparison, path: Path) -> None:
    """IQM with 95% CI error bars per condition, bars grouped by model; return and success rate panels."""
    from matplotlib.figure import Figure

    labels = list(comparison.models)
    conditions = comparison.conditions
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(conditions))
    colors = _model_colors(comparison)
    fig = Figure(figsize=(max(6.0, 1.3 * len(conditions) * max(1, len(labels)) ** 0.5), 7.0), layout="constrained")
    for row, (metric, title) in enumerate(METRIC_TITLES.items()):
        ax = fig.add_subplot(2, 1, row + 1)
        index = {(e.model, e.condition): e for e in comparison.estimates if e.metric == metric and e.aggregate == "iqm"}
        for i, label in enumerate(labels):
            found = [index.get((label, c)) for c in conditions]
            heights = [e.point if e else np.nan for e in found]
            errors = [[e.point - e.low if e else 0 for e in found], [e.high - e.point if e else 0 for e in found]]
            offset = x - 0.4 + width * (i + 0.5)
            ax.bar(offset, heights, width, yerr=errors, capsize=3, label=label, color=colors[label])
        ax.set_xticks(x, [_condition_title(c) for c in conditions], rotation=30, ha="right")
        ax.set(ylabel=f"IQM {title.lower()}", title=f"{title} (IQM over seeds, 95% CI)")
        ax.legend(fontsize="small")
    _save(fig, path)
