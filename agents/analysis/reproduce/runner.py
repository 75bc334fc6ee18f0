"""Run a table end to end: one sweep per model, then the seed record, compare, selection statistics and the
committed folder.

A split table's statistics come from its committed seed record (:mod:`agents.analysis.reproduce.seed_store`):
the finished run folders of this call are added to it first, so seeds trained earlier (whose folders are gone)
and seeds trained now are compared together.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.analysis.compare import Run, compare_runs, load_runs
from agents.analysis.modularity import StatsSettings, sweep_stats
from envs.splits import load_split

from .meta import meta, repo_relative, training_batches
from .protocol import Protocol, load_protocol
from .report import Extra, write_table
from .seed_store import SeedStore, with_shared
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

ExtraFn = Callable[[SeedStore, Sequence[str], Sequence[str]], Extra]  # (record, models, test conditions) -> Extra


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


def budget_of(plan: Plan, stats: StatsSettings | None) -> dict[str, Any]:
    """The budget of a table as recorded in ``meta.json`` (``stats``: how its selection statistics were played)."""
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
        if stats.conditions is not None:
            budget["stats_conditions"] = list(stats.conditions)
    return budget


def finished_runs(plan: Plan) -> dict[str, list[Run]]:
    """``{model: finished runs in its sweep folder, sorted by seed}`` (models without any are left out)."""
    models: dict[str, list[Run]] = {}
    for model, folder in sweep_folders(plan).items():
        try:
            runs = sorted(load_runs([folder]), key=lambda run: run.seed) if folder.is_dir() else []
        except ValueError:
            runs = []
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


def _model_info(plan: Plan, runs: dict[str, list[Run]], earlier: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: its preset, core, width, units and k, learning rate and sweep folder.

    :param earlier: the table's previous ``summary.json`` models, for models without a run folder this time.
    """
    info = {}
    keys = ("core", "hidden_size", "num_units", "k")
    for model, members in runs.items():
        config = members[0].config
        known = {key: earlier.get(model, {}).get(key) for key in keys if key in earlier.get(model, {})}
        info[model] = {
            "preset": f"configs/model/{model}.yaml",
            **known,
            **{key: config["model"][key] for key in keys if key in config["model"]},
            "learning_rate": config["agent"]["learning_rate"],
            "sweep_dir": str(plan.sweep_dir(model)),
        }
    return info


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(plan: Plan, out_dir: Path, stats: StatsSettings) -> tuple[SeedStore, SeedStore, dict[str, list[Run]]]:
    """The table's seed record with this call's finished runs (and their selection statistics) added.

    :returns: ``(own record, to save; the record with the shared models' rows of their own tables, to compare;
        the runs read from folders that the record did not hold yet)``.
    """
    store = SeedStore.load(out_dir, plan.preset.env)
    shared = SHARED_SWEEPS.get(plan.preset.table, {})
    harvested = {}
    for model, runs in finished_runs(plan).items():
        if model in shared:
            continue
        new = [run for run in runs if not store.holds(model, run)]
        if new:
            harvested[model] = new
            store.add_runs(model, new)
        for run in runs:  # seeds recorded before training.csv existed: their training rows only, not a new batch
            if run not in new and run.selection and not store.holds_training(model, run.seed):
                store.add_training(model, run)
    rims = [m for m, runs in harvested.items() if runs[0].core.startswith("rim")]
    if rims:
        labels = {run.path: m for m in rims for run in harvested[m]}
        for model, model_stats in sweep_stats([plan.sweep_path(m) for m in rims], stats, labels).items():
            store.add_selection(model, model_stats.seeds, model_stats.per_run)
    return store, with_shared(store, plan.preset.table), harvested


def run_learning_rates(runs: dict[str, list[Run]], tuned: dict[str, float] | None) -> list[str]:
    """Notes for the models whose recorded runs were trained at another rate than the tune table's current
    choice (a rerun at the new rate is pending); the report names each model's rate from its runs.

    :param runs: ``{model: its runs}`` (from folders or the seed record); ``tuned``: the plan's rates.
    :raises ReproduceError: a model whose seeds were trained at different rates (a rerun at a new
        rate is harvested only once every seed has finished, or the earlier folders are moved aside).
    """
    notes = []
    for model, members in runs.items():
        by_seed = {run.seed: run.config.get("agent", {}).get("learning_rate") for run in members}
        found = set(by_seed.values())
        if len(found) > 1:
            raise ReproduceError(
                f"`{model}` mixes learning rates across seeds ({by_seed}): one table compares each model at one "
                "rate; finish the rerun of every seed at the new rate before harvesting it"
            )
        rate = found.pop() if found else None
        wanted = None if tuned is None else tuned.get(model)
        if wanted is not None and rate is not None and float(rate) != float(wanted):
            notes.append(
                f"`{model}` was trained at learning rate {rate:g}; the `tune` table now chooses {wanted:g} "
                "(validation levels): its rerun at that rate is pending, and these rows are at the earlier rate."
            )
    return notes


def reproduce_split(
    plan: Plan,
    out_dir: Path,
    stats: StatsSettings,
    only_compare: bool = False,
    reps: int = 2000,
    argv: Sequence[str] | None = None,
    extra: ExtraFn | None = None,
) -> tuple[list[str], list[Path]]:
    """Run (or, with ``only_compare``, only collect) a split table and write its committed folder.

    The report compares every model of ``plan.reported`` that the record holds, whichever of them this call runs.

    :param stats: how the RIM models' activation statistics are computed.
    :param reps: bootstrap replications of the comparison.
    :param argv: the command line recorded in ``meta.json`` (default: ``sys.argv``).
    :param extra: what the table adds to its folder, from its record (with the shared models' rows), the models
        compared and the test conditions evaluated (the modularity tables' selection bar).
    :returns: ``(models whose sweep failed, files written)``.
    :raises ReproduceError: no finished run at all, or a sweep folder that cannot be resumed.
    """
    protocol = load_protocol(plan.preset.table, plan.preset.env)
    failed = [] if only_compare else run_sweeps(plan)
    notes = [f"The sweep of `{m}` reported failed jobs; every finished run is included." for m in failed]
    evaluated = plan.settings.get("eval.conditions")
    if evaluated is not None and not set(protocol.pooled) <= set(evaluated):  # a smoke run's few conditions
        protocol = replace(protocol, pooled=tuple(c for c in protocol.pooled if c in evaluated))
        notes.append(f"Only {list(evaluated)} were evaluated: the primary endpoint pools {list(protocol.pooled)}.")
    store, view, harvested = _record(plan, out_dir, stats)
    runs = view.runs(plan.reported)
    if not runs:
        raise ReproduceError(f"no recorded or finished runs of table {plan.preset.table!r} (under {plan.sweep_root})")
    for model in plan.models:
        missing = sorted(set(plan.seeds) - set(view.seeds(model)))
        if missing:
            folder = repo_relative(plan.sweep_path(model))
            notes.append(f"`{model}`: seeds {missing} have not finished (no eval.json in {folder}).")
    notes += run_learning_rates(runs, plan.learning_rates)
    protocol, absent = present_contrasts(protocol, runs)
    notes += [
        f"The protocol's contrast `{m}` has no runs in this comparison: its verdicts are left out." for m in absent
    ]
    comparison = compare_runs(runs, reps=reps, pooled=protocol.pooled, baselines=protocol.baselines)
    shared = SHARED_SWEEPS.get(plan.preset.table, {})
    for model in (m for m in runs if m in shared):
        notes.append(f"`{model}`: the runs of table `{shared[model]}` (its seed record), shared, not rerun.")
    rim_models = [m for m, members in runs.items() if members[0].core.startswith("rim")]
    modularity = view.selection_stats(rim_models)
    previous = _read_json(out_dir / "meta.json")
    budget = {**budget_of(plan, stats), "seeds": {m: [run.seed for run in members] for m, members in runs.items()}}
    batch = None
    if harvested:
        batch = meta(
            {**budget_of(plan, stats), "seeds": {m: [run.seed for run in r] for m, r in harvested.items()}},
            argv,
            sweeps={m: c for m, c in sweep_commands(plan).items() if m in harvested},
            cost=run_cost(harvested, plan.jobs),
        )
    batches = training_batches(previous, batch)
    data = meta(budget, argv, table=plan.preset.table, split=comparison.split, batches=batches)
    earlier = _read_json(out_dir / "summary.json").get("models", {})
    info = _model_info(plan, runs, earlier)
    conditions = list(evaluated or load_split(plan.preset.env).test)
    added = None if extra is None else extra(view, list(runs), conditions)
    files = write_table(comparison, modularity, data, info, notes, out_dir, protocol, added)
    files += store.save(out_dir)
    return failed, files


def present_contrasts(protocol: Protocol, runs: dict[str, list[Run]]) -> tuple[Protocol, list[str]]:
    """``protocol`` without the contrasts that have no runs among ``runs`` (a smoke run's few models), and those."""
    absent = [m for m in protocol.contrasts if m not in runs]
    return replace(protocol, contrasts=tuple(m for m in protocol.contrasts if m in runs)), absent


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
    return failed, write_tune(rows, grid, plan.seeds, choice_meta(plan, argv), out_dir)


def choice_meta(plan: Plan, argv: Sequence[str] | None, stats: StatsSettings | None = None) -> dict[str, Any]:
    """``meta.json`` of a table that chooses (``tune``, ``modularity_tune``): its budget, every sweep's command
    and the cost of the finished runs in its sweep folders."""
    runs = {m: load_runs([f]) for m, f in sweep_folders(plan).items() if f.is_dir() and any(f.glob("*/eval.json"))}
    return meta(
        budget_of(plan, stats),
        argv,
        table=plan.preset.table,
        split=plan.preset.env,
        sweeps=sweep_commands(plan),
        cost=run_cost(runs, plan.jobs),
    )


def with_grid(plan: Plan, grid: Sequence[float]) -> Plan:
    """``plan`` with the preset's learning-rate grid replaced (the smoke run's shorter grid)."""
    params = [(key, list(grid) if key == LEARNING_RATE else values) for key, values in plan.preset.params]
    return replace(plan, preset=replace(plan.preset, params=params))
