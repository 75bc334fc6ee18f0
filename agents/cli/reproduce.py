"""``rims-reproduce TABLE`` / ``scripts/reproduce.py TABLE``: one command per table of the RIM vs LSTM results.

Usage::

    rims-reproduce tune                     # learning rate per core on doorkey's validation levels
    rims-reproduce doorkey                  # lstm, gru, rim, rim_u6k4 x 5 seeds, then compare + modularity
    rims-reproduce doorkey --first-seed 5 --seeds 5   # seeds 5-9 added to the table's record of 0-4
    rims-reproduce empty --seeds 10 --jobs 2
    rims-reproduce multiroom --launcher slurm -o hydra.launcher.partition=cpu
    rims-reproduce doorkey --only-compare   # rebuild the report from the runs that finished
    rims-reproduce doorkey --smoke          # tiny budget, 1 seed, lstm and rim: an end-to-end check (a table's
                                            # shared models are not trained: their committed seeds are compared)
    rims-reproduce knobs                    # RIM variants against a collapsed selection, beside doorkey's lstm, rim
    rims-reproduce modularity_tune          # issue 26 stage 1: each remedy family's coefficient, on validation levels
    rims-reproduce modularity               # stage 2: the chosen remedies beside doorkey's lstm and rim, the bar
    rims-reproduce modularity --first-seed 5 --seeds 5 --models rim_noise_s1   # stage 3: the carried remedy's 5-9
    rims-reproduce modularity_multiroom     # stage 3: the carried remedy beside multiroom's lstm and rim
    rims-reproduce copying --seeds 3        # the RIMs paper's copying task (scripts/copying.py)
    rims-reproduce verdicts                 # the verdict rule's false-verdict rate and power on the tables' seeds
    rims-reproduce readme                   # rewrite the result tables of README.md and docs/ from the summaries

A split table runs one Hydra sweep per model (``scripts/train.py -m``, ``resume=true``) into
``multirun/reproduce/<table>/<model>/``, so the same command continues an interrupted reproduction
and returns finished jobs at once; then it adds the finished runs to the table's seed record
(``seeds.csv``, ``curves.csv``, ``selection.csv``), compares every recorded seed of every model under the
table's declared ``protocol.yaml`` and writes ``report.md``, ``summary.{json,csv}``,
``learning_curves.png``, ``ood_bars.png`` and ``meta.json`` to ``scripts/reproduce/<table>/``
(``--smoke``: ``multirun/reproduce_smoke/<table>/``).
Exit status: 0 done; 1 the report was written but a sweep reported failed jobs; 2 cannot run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

from agents.analysis.modularity import StatsSettings
from agents.analysis.reproduce.meta import meta
from agents.analysis.reproduce.modularity_tables import modularity_extra, modularity_models
from agents.analysis.reproduce.modularity_tune import reproduce_modularity_tune
from agents.analysis.reproduce.readme import update_docs
from agents.analysis.reproduce.remedy_rules import STATS_EPISODES
from agents.analysis.reproduce.runner import reproduce_split, reproduce_tune, with_grid
from agents.analysis.reproduce.tables import (
    ALL_MODELS,
    COPYING,
    LAUNCHERS,
    MODULARITY_TABLES,
    MODULARITY_TUNE,
    REPO,
    RESULTS_DIR,
    SHARED_SWEEPS,
    SMOKE_LEARNING_RATES,
    SMOKE_ROOT,
    SMOKE_SETTINGS,
    SWEEP_ROOT,
    TABLES,
    TUNE,
    Plan,
    Preset,
    ReproduceError,
    learning_rates_for,
    load_preset,
    smoke_conditions,
    table_models,
)
from agents.analysis.reproduce.tune import load_choice
from agents.analysis.reproduce.verdict_check import write_verdicts
from envs.splits import VALIDATION, load_split

README = "readme"  # not a table: the README's result tables from the committed summaries
VERDICTS = "verdicts"  # the verdict rule's error rate and power on the split tables' committed seeds
SMOKE_STATS = StatsSettings(episodes=2, max_steps=64, n_envs=2)
SMOKE_REPS = 200
STATS_EPISODES_DEFAULT = 20  # post-hoc statistics of a split table; the modularity tables' choices read more


def _parser() -> argparse.ArgumentParser:
    """The argument parser of ``rims-reproduce``."""
    parser = argparse.ArgumentParser(
        prog="rims-reproduce",
        description="Run one table of the RIM vs LSTM comparison end to end: sweeps (resumable), compare, "
        "modularity statistics, and the committed summary in scripts/reproduce/<table>/.",
    )
    parser.add_argument(
        "table",
        choices=(*TABLES, VERDICTS, README),
        help="the table to reproduce (verdicts: the verdict rule's measured error rate and power on the committed "
        "seeds; readme: the tables in README.md, docs/)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default: the preset's, 5 / 2)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=None,
        help="first training seed (default: the preset's); e.g. --first-seed 5 --seeds 5 adds seeds 5-9 to a table "
        "whose record holds 0-4",
    )
    parser.add_argument("--frames", type=int, default=None, help="training frames per run (default: the preset's)")
    parser.add_argument("--smoke", action="store_true", help="tiny budget, 1 seed, lstm and rim; never committed")
    parser.add_argument(
        "--jobs", type=int, default=None, help="parallel jobs of the joblib launcher (default: 2; smoke 1)"
    )
    parser.add_argument("--launcher", choices=list(LAUNCHERS), default="joblib", help="Hydra launcher")
    parser.add_argument("--only-compare", action="store_true", help="no training: report on the finished runs")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=ALL_MODELS,
        default=None,
        help="models to run (default: the table's); the report still compares every model of the table in its record",
    )
    parser.add_argument(
        "--stats-episodes",
        type=int,
        default=None,
        help=f"episodes per condition for modularity (default: {STATS_EPISODES_DEFAULT}; the modularity tables "
        f"{STATS_EPISODES}, on their test conditions and validation levels)",
    )
    parser.add_argument("--reps", type=int, default=None, help="bootstrap replications (default: 2000; smoke 200)")
    parser.add_argument("--root", type=Path, default=None, help="folder of the sweep folders (default: multirun/...)")
    parser.add_argument("--out", type=Path, default=None, help="where the summary goes (default: see above)")
    parser.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="extra override for every sweep"
    )
    return parser


def _root(args: argparse.Namespace) -> Path:
    """The sweep root: relative to the repository when inside it (as the by-hand commands give it)."""
    if args.root is None:
        return SMOKE_ROOT if args.smoke else SWEEP_ROOT
    root = args.root.resolve()
    return root.relative_to(REPO) if root.is_relative_to(REPO) else root


def _out_dir(args: argparse.Namespace, root: Path) -> Path:
    """Where the summary goes; a smoke run never writes into the committed folder."""
    out = args.out if args.out is not None else (REPO / root / args.table if args.smoke else RESULTS_DIR / args.table)
    if args.smoke and out.resolve().is_relative_to(RESULTS_DIR.resolve()):
        raise ReproduceError(f"--smoke never writes into the committed results ({RESULTS_DIR}); choose another --out")
    return out


def _choices(args: argparse.Namespace, out: Path) -> Path:
    """Where a table reads an earlier table's choice: the committed results, or beside a smoke run's own folder."""
    return out.parent if args.smoke else RESULTS_DIR


def _models(args: argparse.Namespace, out: Path) -> tuple[str, ...]:
    """The table's own models (a modularity table's from the earlier tables' choices)."""
    if args.table in MODULARITY_TABLES:
        return modularity_models(args.table, _choices(args, out), args.smoke)
    return table_models(args.table, args.smoke)


def _plan(args: argparse.Namespace, preset: Preset, root: Path, out: Path) -> Plan:
    """The plan of a MiniGrid table from the arguments and the preset."""
    first_seed = (preset.param("seed") or [0])[0] if args.first_seed is None else args.first_seed
    default_seeds = 1 if args.smoke else len(preset.param("seed") or [0])
    seeds = list(range(first_seed, first_seed + (args.seeds or default_seeds)))
    smoke_frames = SMOKE_SETTINGS["total_frames"]
    frames = args.frames or (smoke_frames if args.smoke else int(preset.setting("total_frames")))
    compared = _models(args, out)
    shared = SHARED_SWEEPS.get(args.table, {})  # a smoke run compares the shared models' committed seeds
    models = tuple(args.models or (m for m in compared if not (args.smoke and m in shared)))
    rates = None
    if args.table != TUNE and not args.smoke:
        choice_file = RESULTS_DIR / TUNE / "summary.json"
        rates = learning_rates_for(models, load_choice(choice_file), choice_file)
    settings = {k: v for k, v in SMOKE_SETTINGS.items() if k != "total_frames"} if args.smoke else {}
    if args.smoke and preset.setting("eval.conditions") is None:  # tables that evaluate on validation keep it
        settings["eval.conditions"] = list(smoke_conditions(preset.env))
    jobs = args.jobs or (1 if args.smoke else 2)
    plan = Plan(preset, models, seeds, frames, rates, jobs, args.launcher, root, settings, tuple(args.override))
    plan = replace(plan, compared=compared)
    return with_grid(plan, SMOKE_LEARNING_RATES) if args.smoke and args.table == TUNE else plan


def _stats(args: argparse.Namespace, plan: Plan) -> StatsSettings:
    """How a table's selection statistics are played: every evaluated test condition (a modularity table's and
    ``modularity_tune``'s: with the validation levels; ``modularity_tune``: those only)."""
    env = plan.preset.env
    conditions = smoke_conditions(env) if args.smoke else tuple(load_split(env).test)
    if args.table == MODULARITY_TUNE:
        conditions = (VALIDATION,)
    elif args.table in MODULARITY_TABLES:
        conditions = (*conditions, VALIDATION)
    modular = args.table in (MODULARITY_TUNE, *MODULARITY_TABLES)
    if args.smoke:
        return replace(SMOKE_STATS, conditions=conditions)
    episodes = args.stats_episodes or (STATS_EPISODES if modular else STATS_EPISODES_DEFAULT)
    return StatsSettings(conditions=conditions if modular else None, episodes=episodes)


def _copying(args: argparse.Namespace) -> int:
    """``copying``: delegate to ``scripts/copying.py`` (:mod:`agents.cli.copying`)."""
    from agents.cli.copying import main as copying_main

    forwarded = [*(["--seeds", str(args.seeds)] if args.seeds else []), *(["--smoke"] if args.smoke else [])]
    forwarded += ["--first-seed", str(args.first_seed)] if args.first_seed is not None else []
    if args.out is not None or args.smoke:
        forwarded += ["--out", str(_out_dir(args, _root(args)))]
    if args.root is not None:
        forwarded += ["--root", str(args.root / COPYING)]
    return copying_main(forwarded)


def main(argv: list[str] | None = None) -> int:
    """Run ``rims-reproduce``; returns the exit status (0 done, 1 failed jobs, 2 cannot run)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # rliable logs every bootstrap at INFO
    try:
        if args.table == COPYING:
            return _copying(args)
        if args.table == README:
            for path, changed in update_docs(REPO).items():
                done = "rewrote the results of " + ", ".join(changed) if changed else "up to date"
                print(f"{path.relative_to(REPO)}: {done}")
            return 0
        if args.table == VERDICTS:
            out = args.out or RESULTS_DIR / VERDICTS
            command = None if argv is None else ["scripts/reproduce.py", *argv]
            files = write_verdicts(out, meta({}, command, table=VERDICTS))
            print(f"table {VERDICTS}: wrote {', '.join(p.name for p in files)}")
            return 0
        root = _root(args)
        out = _out_dir(args, root)
        plan = _plan(args, load_preset(args.table), root, out)
        command = None if argv is None else ["scripts/reproduce.py", *argv]
        if args.table == TUNE:
            failed, choice = reproduce_tune(plan, out, args.only_compare, command)
            print(f"tune: chosen learning rates {choice}")
        elif args.table == MODULARITY_TUNE:
            failed, chosen = reproduce_modularity_tune(plan, out, _stats(args, plan), args.only_compare, command)
            print(f"{MODULARITY_TUNE}: chosen per family {chosen}")
        else:
            reps = args.reps or (SMOKE_REPS if args.smoke else 2000)
            extra = None
            if args.table in MODULARITY_TABLES:  # the stage-2 choice counts the preset's seeds (smoke: its own)
                stage_seeds = plan.seeds if args.smoke else list(plan.preset.param("seed") or [])
                extra = partial(modularity_extra, args.table, seeds=stage_seeds)
            failed, files = reproduce_split(plan, out, _stats(args, plan), args.only_compare, reps, command, extra)
            print(f"table {args.table}: wrote {', '.join(p.name for p in files)}")
    except ReproduceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"summary: {out}")
    if failed:
        print(f"sweeps with failed jobs: {', '.join(failed)} (rerun the same command to continue them)")
    return 1 if failed else 0
