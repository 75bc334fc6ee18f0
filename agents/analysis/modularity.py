"""Modularity diagnostics over many trained RIM runs: activation statistics per run, averaged over seeds.

For every RIM run folder found under the given paths, :func:`run_stats` computes (or reads back)
the statistics of :mod:`agents.analysis.activations` per test condition, without rendering, and keeps them
in ``<run>/visualize/activation_stats.json``. :func:`sweep_stats` groups the runs into models
(the labels of :func:`agents.analysis.compare.label_runs`: core plus the settings that differ) and
:func:`aggregate_stats` averages each model's statistics over its seeds, per condition.

Units are exchangeable between seeds (unit 0 of one seed has nothing to do with unit 0 of
another), so besides the per-index mean the aggregate holds ``sorted_frequency``: each seed's
frequencies sorted from the busiest unit down, then averaged rank by rank.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from agents.analysis.activations import (
    PARALLEL_ENVS,
    RIM_CORES,
    STATS_STEM,
    activation_stats,
    check_conditions,
    collapse_reasons,
)
from agents.analysis.activations import write_activation_stats as _write_stats
from agents.analysis.compare.runs import Run, find_runs, label_runs
from agents.analysis.specialisation import aggregate_specialisation
from agents.experiment.atomic import atomic_write_text
from agents.experiment.run_folder import MODEL_FILE, load_run
from agents.experiment.selection_stats import CASES

log = logging.getLogger(__name__)

SUMMARY_STEM = "activation_summary"
CACHED_KEYS = ("selection_case", "specialisation")  # statistics a kept activation_stats.json must hold to be read back


@dataclass
class ModelStats:
    """Activation statistics of one model (runs that differ only in their seed).

    :param label: the model label.
    :param runs: the run folders, in seed order.
    :param seeds: their seeds.
    :param per_run: per run, the statistics of each condition (:func:`agents.analysis.activations.activation_stats`).
    :param aggregate: per condition, the statistics averaged over runs (:func:`aggregate_stats`).
    """

    label: str
    runs: list[Path]
    seeds: list[int]
    per_run: list[list[dict[str, Any]]] = field(default_factory=list)
    aggregate: list[dict[str, Any]] = field(default_factory=list)


def _cached(path: Path, names: Sequence[str], episodes: int, max_steps: int | None) -> list[dict[str, Any]] | None:
    """Statistics in ``path`` if they cover ``names`` with ``episodes`` episodes and ``max_steps``, else None."""
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    by_name = {s.get("condition"): s for s in stats if isinstance(s, dict)}
    wanted = [by_name.get(name) for name in names]
    if any(s is None or s.get("episodes") != episodes or s.get("max_steps", None) != max_steps for s in wanted):
        return None
    if any(key not in s for s in wanted for key in CACHED_KEYS):  # written before these statistics existed
        return None
    return wanted


@dataclass(frozen=True)
class StatsSettings:
    """How the activation statistics of a run are computed.

    :param conditions: test conditions (default: all of the split's).
    :param episodes: episodes per condition (level seeds ``0 .. episodes - 1``, deterministic actions).
    :param max_steps: cut episodes after this many steps (default: play them out).
    :param n_envs: environments played in parallel.
    :param force: recompute statistics already kept in a run folder.
    :param progress: show a tqdm bar over the episodes of each run.
    :param device: torch device to load the models on.
    """

    conditions: tuple[str, ...] | None = None
    episodes: int = 20
    max_steps: int | None = None
    n_envs: int = PARALLEL_ENVS
    force: bool = False
    progress: bool = True
    device: str = "cpu"


def run_stats(run_dir: str | Path, settings: StatsSettings = StatsSettings()) -> list[dict[str, Any]]:
    """Activation statistics of one RIM run per condition, computed without rendering and kept in the run folder.

    The statistics go to ``<run>/visualize/activation_stats.{json,csv,md}``; a later call with
    the same conditions, ``episodes`` and ``max_steps`` reads them back instead of playing again
    (unless ``settings.force``).

    :raises ValueError: not a finished RIM run, an unknown condition or ``episodes < 1``.
    """
    run = Path(run_dir)
    model, split, cfg = load_run(run, device=settings.device)
    if cfg.model.core not in RIM_CORES:
        raise ValueError(f"run {run} has core {cfg.model.core!r}; activation statistics need a RIM core")
    names = check_conditions(split, settings.conditions)
    out = run / "visualize"
    episodes, max_steps = settings.episodes, settings.max_steps
    cached = None if settings.force else _cached(out / f"{STATS_STEM}.json", names, episodes, max_steps)
    if cached is not None:
        log.info("%s: activation statistics read back from %s", run, out)
        return cached
    stats = []
    total = len(names) * episodes
    with tqdm(total=total, desc=run.name, unit="ep", disable=not settings.progress, leave=False) as bar:
        for name in names:
            bar.set_postfix_str(name)
            condition = split.condition(name)
            stats.append(activation_stats(model, condition, episodes, True, max_steps, settings.n_envs, progress=bar))
    _write_stats(stats, out)
    return stats


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std())


def aggregate_stats(per_run: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per condition, the statistics of several runs (seeds) of one model averaged over the runs.

    :param per_run: per run, :func:`agents.analysis.activations.activation_stats` results (one per condition).
    :returns: per condition (first run's order; runs lacking it are left out of its average):
        ``condition``, ``n_runs``, ``units``, ``unit_frequency`` (mean per unit index),
        ``sorted_frequency`` (mean per rank, busiest unit first), ``mean_active``, ``switch_rate``
        (mean), ``switch_rate_std``, ``switch_rates`` and ``mean_returns`` (per run),
        ``collapsed_runs`` (how many runs :func:`agents.analysis.activations.collapse_reasons` flags),
        ``collapse_reasons`` (per run), ``cases`` (per run: ``fixed``, ``per-episode``, ``switching``, or
        ``None`` where not recorded), ``case_counts`` (``{case: runs}``, the cases recorded) and ``always_on`` /
        ``never_on`` (per run, unit labels; :mod:`agents.experiment.selection_stats`) and ``specialisation``
        (:func:`agents.analysis.specialisation.aggregate_specialisation`).
    """
    order = list(dict.fromkeys(s["condition"] for stats in per_run for s in stats))
    out = []
    for condition in order:
        rows = [s for stats in per_run for s in stats if s["condition"] == condition]
        freqs = np.array([s["unit_frequency"] for s in rows], dtype=float)  # (runs, R)
        switch, switch_std = _mean_std([s["switch_rate"] for s in rows])
        reasons = [collapse_reasons(s) for s in rows]
        out.append(
            {
                "condition": condition,
                "n_runs": len(rows),
                "units": list(rows[0]["units"]),
                "unit_frequency": freqs.mean(axis=0).tolist(),
                "sorted_frequency": (-np.sort(-freqs, axis=1)).mean(axis=0).tolist(),
                "mean_active": _mean_std([s["mean_active"] for s in rows])[0],
                "switch_rate": switch,
                "switch_rate_std": switch_std,
                "switch_rates": [float(s["switch_rate"]) for s in rows],
                "mean_returns": [float(s["mean_return"]) for s in rows],
                "collapsed_runs": sum(bool(r) for r in reasons),
                "collapse_reasons": reasons,
                **case_aggregate([s.get("selection_case") for s in rows]),
                "always_on": [list(s.get("always_on", [])) for s in rows],
                "never_on": [list(s.get("never_on", [])) for s in rows],
                "specialisation": aggregate_specialisation([s.get("specialisation", []) for s in rows]),
            }
        )
    return out


def case_aggregate(cases: Sequence[str | None]) -> dict[str, Any]:
    """``cases`` (per run, ``None`` where unknown) and ``case_counts`` (``{case: runs}`` in
    :data:`agents.experiment.selection_stats.CASES` order, known cases only)."""
    counts = {case: sum(c == case for c in cases) for case in CASES}
    return {"cases": list(cases), "case_counts": {case: n for case, n in counts.items() if n}}


def format_cases(counts: dict[str, int]) -> str:
    """``fixed 3, switching 2`` (``-`` when no case is known)."""
    return ", ".join(f"{case} {n}" for case, n in counts.items()) or "-"


def rim_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Finished RIM runs (``config.yaml`` with a RIM core, and ``model.zip``) at or below ``paths``.

    Runs of other cores are skipped; unfinished RIM runs are skipped with a warning.
    """
    runs = []
    for path in find_runs(paths):
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        if config.get("model", {}).get("core") not in RIM_CORES:
            continue
        if not (path / MODEL_FILE).is_file():
            log.warning("skipping %s: no %s (unfinished run)", path, MODEL_FILE)
            continue
        runs.append(Run(path=path, config=config, scores={}, curves={}))
    return runs


def sweep_stats(
    paths: Iterable[str | Path], settings: StatsSettings = StatsSettings(), labels: dict[Path, str] | None = None
) -> dict[str, ModelStats]:
    """Activation statistics of every finished RIM run under ``paths``, grouped into models and averaged.

    :param settings: how each run's statistics are computed (see :func:`run_stats`).
    :param labels: ``{run folder: model label}`` to use instead of :func:`agents.analysis.compare.label_runs`
        (e.g. the preset names of a reproduction table); runs missing from it keep the computed label.
    :returns: ``{label: ModelStats}`` in label order.
    :raises ValueError: no finished RIM run under ``paths``.
    """
    runs = rim_runs(paths)
    if not runs:
        raise ValueError(f"no finished RIM runs under {', '.join(map(str, paths))}")
    computed = label_runs(runs)
    models: dict[str, ModelStats] = {}
    for run, label in sorted(zip(runs, computed, strict=True), key=lambda pair: (pair[1], pair[0].seed)):
        label = (labels or {}).get(run.path, label)
        models.setdefault(label, ModelStats(label, [], [])).runs.append(run.path)
        models[label].seeds.append(run.seed)
    for model in models.values():
        for run_dir in model.runs:
            model.per_run.append(run_stats(run_dir, settings))
        model.aggregate = aggregate_stats(model.per_run)
    return dict(sorted(models.items()))


def format_summary_table(models: dict[str, ModelStats]) -> str:
    """Markdown table of the aggregates: a row per model x condition (``-`` where no seed recorded a value; unit
    frequencies recorded by only some seeds say how many)."""
    header = ["model", "condition", "seeds", "mean active", "switch rate (mean ± sd)", "unit frequency, busiest first",
              "collapsed seeds", "cases (seeds)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, model in models.items():
        for agg in model.aggregate:
            frequency = " ".join(f"{f:.2f}" for f in agg["sorted_frequency"]) or "-"
            partial = agg.get("n_frequency", agg["n_runs"])
            if agg["sorted_frequency"] and partial < agg["n_runs"]:
                frequency += f" ({partial} seeds)"
            active = agg["mean_active"]
            cells = [
                label,
                agg["condition"],
                str(agg["n_runs"]),
                "-" if active is None else f"{active:.2f}",
                f"{agg['switch_rate']:.3f} ± {agg['switch_rate_std']:.3f}",
                frequency,
                f"{agg['collapsed_runs']}/{agg['n_runs']}",
                format_cases(agg.get("case_counts", {})),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_specialisation_table(models: dict[str, ModelStats]) -> str:
    """Markdown table of the specialisation aggregates, a row per model x condition x factor; empty when no run
    recorded any (:func:`agents.analysis.specialisation.aggregate_specialisation`)."""
    rows = [(label, agg["condition"], spec) for label, model in models.items() for agg in model.aggregate
            for spec in agg.get("specialisation", [])]  # fmt: skip
    if not rows:
        return ""
    header = ["model", "condition", "factor", "seeds", "set: excess MI (bits)", "best unit: excess MI (bits)",
              "seeds with set MI > baseline p95", "seeds with a unit's MI > baseline p95"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, condition, spec in rows:
        cells = [label, condition, spec["factor"], str(spec["n_runs"]), f"{spec['set_excess_bits']:.3f}",
                 f"{spec['best_unit_excess_bits']:.3f}", f"{spec['set_above_p95']}/{spec['n_runs']}",
                 f"{spec['units_above_p95']}/{spec['n_runs']}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_json(models: dict[str, ModelStats]) -> dict[str, Any]:
    """The aggregates as plain JSON data: ``{label: {runs, seeds, aggregate, per_run}}``."""
    return {
        label: {
            "runs": [str(p) for p in model.runs],
            "seeds": model.seeds,
            "aggregate": model.aggregate,
            "per_run": model.per_run,
        }
        for label, model in models.items()
    }


def write_summary(models: dict[str, ModelStats], out_dir: str | Path) -> list[Path]:
    """Write ``activation_summary.json`` and ``activation_summary.md`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = [format_summary_table(models), format_specialisation_table(models)]
    texts = {
        out / f"{SUMMARY_STEM}.json": json.dumps(summary_json(models), indent=2) + "\n",
        out / f"{SUMMARY_STEM}.md": "\n\n".join(table for table in tables if table) + "\n",
    }
    for path, text in texts.items():
        atomic_write_text(path, text)
    return list(texts)
