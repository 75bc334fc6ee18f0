"""Run a table end to end: one sweep per model, then compare, modularity statistics and the committed folder."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.analysis.compare import Run, compare_runs, load_runs
from agents.analysis.modularity import StatsSettings, sweep_stats

from .meta import meta, repo_relative
from .report import write_table
from .tables import (
    LEARNING_RATE,
    SHARED_SWEEPS,
    Plan,
    ReproduceError,
    check_sweep_dir,
    launch,
    sweep_folders,
    sweep_overrides,
)
from .tune import tune_runs, write_tune

log = logging.getLogger(__name__)


def sweep_lanes(plan: Plan) -> list[list[str]]:
    """The models' sweeps grouped into lanes that run side by side, one job each.

    With the joblib launcher and ``jobs`` > 1, ``min(jobs, models)`` lanes take the models in turn
    (each lane runs its sweeps one after another with one job), so a core never waits for the last
    seed of a sweep while other models are left; otherwise one lane runs every sweep with ``jobs``.
    """
    if plan.launcher != "joblib" or plan.jobs <= 1 or len(plan.models) <= 1:
        return [list(plan.models)]
    lanes = min(plan.jobs, len(plan.models))
    return [list(plan.models[i::lanes]) for i in range(lanes)]


def run_sweeps(plan: Plan) -> list[str]:
    """Launch every model's sweep (in lanes, :func:`sweep_lanes`); returns the models whose sweep
    reported a failure. Every sweep folder is checked before the first launch."""
    for model in plan.models:
        check_sweep_dir(plan, model)
    lanes = sweep_lanes(plan)
    n_jobs = None if len(lanes) == 1 else 1

    def run_lane(models: list[str]) -> list[str]:
        failed = []
        for model in models:
            code = launch(plan, model, n_jobs)
            if code != 0:
                log.warning("the sweep of %s exited with status %d; its finished runs are still used", model, code)
                failed.append(model)
        return failed

    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        results = list(pool.map(run_lane, lanes))
    return [m for m in plan.models if any(m in failed for failed in results)]


def sweep_commands(plan: Plan) -> dict[str, str]:
    """The by-hand command of each model's sweep, as recorded in ``meta.json``."""
    return {m: "python scripts/train.py -m " + " ".join(sweep_overrides(plan, m)) for m in plan.models}


def _budget(plan: Plan, stats: StatsSettings | None) -> dict[str, Any]:
    """The budget of a table as recorded in ``meta.json``."""
    settings = {**dict(plan.preset.settings), **plan.settings}
    budget = {
        "frames": plan.frames,
        "seeds": plan.seeds,
        "models": list(plan.models),
        "final_episodes": settings.get("eval.final_episodes", 100),
        "eval_every_frames": settings.get("eval.every_frames", 50000),
        "eval_episodes": settings.get("eval.episodes", 10),
        "learning_rates": plan.learning_rates,
    }
    if stats is not None:
        budget["stats_episodes"] = stats.episodes
    return budget


def _finished_runs(plan: Plan, notes: list[str]) -> dict[str, list[Run]]:
    """``{model: finished runs sorted by seed}``, noting models and seeds that have not finished."""
    models: dict[str, list[Run]] = {}
    for model, folder in sweep_folders(plan).items():
        try:
            runs = sorted(load_runs([folder]), key=lambda run: run.seed) if folder.is_dir() else []
        except ValueError:
            runs = []
        missing = sorted(set(plan.seeds) - {run.seed for run in runs})
        if missing:
            notes.append(f"`{model}`: seeds {missing} have not finished (no eval.json in {repo_relative(folder)}).")
        seeds = [run.seed for run in runs]
        if len(set(seeds)) != len(seeds):
            raise ReproduceError(f"{folder} holds two runs of one seed ({seeds}); remove the extra job folders")
        if runs:
            models[model] = runs
    return models


def _training_seconds(run: Run) -> float | None:
    """The run's training time in seconds (SB3's ``time/time_elapsed`` of its last update: periodic
    evaluations included, the final evaluation not), or ``None`` without ``metrics.csv``."""
    path = run.path / "metrics.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        values = [row.get("time/time_elapsed") for row in csv.DictReader(handle)]
    values = [float(v) for v in values if v not in (None, "")]
    return max(values) if values else None


def run_cost(runs: dict[str, list[Run]], jobs: int) -> dict[str, Any]:
    """What a table cost: per model and in total the runs' training minutes, and the wall time
    that makes with ``jobs`` runs at once (final evaluations excluded; a resumed run counts its
    last segment)."""
    per_model = {}
    for model, members in runs.items():
        seconds = [s for s in map(_training_seconds, members) if s is not None]
        per_model[model] = round(sum(seconds) / 60, 1)
    total = sum(per_model.values())
    return {
        "training_minutes": per_model,
        "total_minutes": round(total, 1),
        "wall_minutes": round(total / jobs, 1),
        "jobs": jobs,
    }


def _model_info(plan: Plan, runs: dict[str, list[Run]]) -> dict[str, dict[str, Any]]:
    """Per model: its preset, core, width, units and k, learning rate and sweep folder."""
    info = {}
    for model, members in runs.items():
        config = members[0].config
        keys = ("core", "hidden_size", "num_units", "k")
        info[model] = {
            "preset": f"configs/model/{model}.yaml",
            **{key: config["model"][key] for key in keys if key in config["model"]},
            "learning_rate": config["agent"]["learning_rate"],
            "sweep_dir": str(plan.sweep_dir(model)),
        }
    return info


def reproduce_split(
    plan: Plan,
    out_dir: Path,
    stats: StatsSettings,
    only_compare: bool = False,
    reps: int = 2000,
    argv: Sequence[str] | None = None,
) -> tuple[list[str], list[Path]]:
    """Run (or, with ``only_compare``, only collect) a split table and write its committed folder.

    :param stats: how the RIM models' activation statistics are computed.
    :param reps: bootstrap replications of the comparison.
    :param argv: the command line recorded in ``meta.json`` (default: ``sys.argv``).
    :returns: ``(models whose sweep failed, files written)``.
    :raises ReproduceError: no finished run at all, or a sweep folder that cannot be resumed.
    """
    failed = [] if only_compare else run_sweeps(plan)
    notes = [f"The sweep of `{m}` reported failed jobs; every finished run is included." for m in failed]
    runs = _finished_runs(plan, notes)
    if not runs:
        raise ReproduceError(f"no finished runs of table {plan.preset.table!r} under {plan.sweep_root}")
    comparison = compare_runs(runs, reps=reps)
    shared = SHARED_SWEEPS.get(plan.preset.table, {})
    for model in (m for m in runs if m in shared):
        notes.append(
            f"`{model}`: the runs of table `{shared[model]}` ({repo_relative(plan.sweep_path(model))}), shared, "
            "not rerun; their cost is that table's."
        )
    rim_models = [m for m, members in runs.items() if members[0].core.startswith("rim")]
    labels = {run.path: m for m in rim_models for run in runs[m]}
    modularity = sweep_stats([plan.sweep_path(m) for m in rim_models], stats, labels) if rim_models else {}
    data = meta(
        _budget(plan, stats),
        argv,
        table=plan.preset.table,
        split=comparison.split,
        sweeps=sweep_commands(plan),
        cost=run_cost({m: r for m, r in runs.items() if m not in shared}, plan.jobs),
    )
    files = write_table(comparison, modularity, data, _model_info(plan, runs), notes, out_dir)
    return failed, files


def reproduce_tune(
    plan: Plan, out_dir: Path, only_compare: bool = False, argv: Sequence[str] | None = None
) -> tuple[list[str], dict[str, float]]:
    """Run (or only collect) the tune table and write its committed folder.

    :returns: ``(models whose sweep failed, {model: chosen learning rate})``.
    :raises ReproduceError: no finished tuning run.
    """
    failed = [] if only_compare else run_sweeps(plan)
    rows = tune_runs(sweep_folders(plan))
    if not rows:
        raise ReproduceError(f"no finished tuning runs under {plan.sweep_root}")
    grid = plan.preset.param(LEARNING_RATE) or []
    runs = {m: load_runs([f]) for m, f in sweep_folders(plan).items() if f.is_dir() and any(f.glob("*/eval.json"))}
    data = meta(
        _budget(plan, None),
        argv,
        table="tune",
        split=plan.preset.env,
        sweeps=sweep_commands(plan),
        cost=run_cost(runs, plan.jobs),
    )
    return failed, write_tune(rows, grid, plan.seeds, data, out_dir)


def with_grid(plan: Plan, grid: Sequence[float]) -> Plan:
    """``plan`` with the preset's learning-rate grid replaced (the smoke run's shorter grid)."""
    params = [(key, list(grid) if key == LEARNING_RATE else values) for key, values in plan.preset.params]
    return replace(plan, preset=replace(plan.preset, params=params))
