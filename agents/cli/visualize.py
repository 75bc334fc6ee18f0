"""``rims-visualize RUN_DIR``: activation GIFs, heatmaps and statistics of a trained RIM run.

``rims-visualize --stats-only PATH [PATH ...]``: only the activation statistics (no rendering),
for every finished RIM run at or below the paths (run or sweep folders), averaged over the seeds
of each model per condition.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.analysis.activations import PARALLEL_ENVS
from agents.analysis.modularity import StatsSettings, format_summary_table, sweep_stats, write_summary
from agents.analysis.visualize import format_stats_table, visualize_run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rims-visualize",
        description="Record episodes of a trained RIM run and show which units are active, per test condition. "
        "With --stats-only: activation statistics only, for many runs, averaged over seeds.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="run folder with config.yaml and model.zip; with --stats-only also sweep folders, several allowed",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output folder (default: RUN_DIR/visualize; with --stats-only: where activation_summary.{json,md} go, "
        "default the first PATH)",
    )
    parser.add_argument(
        "--conditions", nargs="+", metavar="NAME", default=None, help="test conditions (default: all of the split's)"
    )
    parser.add_argument("--episodes", type=int, default=10, help="episodes per condition for the statistics")
    parser.add_argument("--fps", type=float, default=4.0, help="GIF frames per second")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many steps")
    parser.add_argument("--device", default="cpu", help="torch device to load the model on")
    parser.add_argument(
        "--stats-only",
        action="store_true",
        help="no GIFs or figures: statistics per run (kept in <run>/visualize/) and their mean over seeds per model",
    )
    parser.add_argument(
        "--n-envs", type=int, default=PARALLEL_ENVS, help="--stats-only: environments played in parallel"
    )
    parser.add_argument("--force", action="store_true", help="--stats-only: recompute statistics already in a run")
    return parser


def _stats_only(args: argparse.Namespace) -> int:
    """The ``--stats-only`` mode: statistics of every RIM run under the paths, averaged per model."""
    conditions = None if args.conditions is None else tuple(args.conditions)
    settings = StatsSettings(conditions, args.episodes, args.max_steps, args.n_envs, args.force, True, args.device)
    models = sweep_stats(args.paths, settings)
    files = write_summary(models, args.out if args.out is not None else Path(args.paths[0]))
    runs = sum(len(model.runs) for model in models.values())
    print(f"{runs} RIM runs, models {', '.join(models)}; statistics over {args.episodes} episodes per condition\n")
    print(format_summary_table(models))
    print()
    for path in files:
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 invalid run or arguments)."""
    args = _parser().parse_args(argv)
    try:
        if args.stats_only:
            return _stats_only(args)
        if len(args.paths) != 1:
            raise ValueError(f"give one run folder (or use --stats-only for several), got {len(args.paths)}")
        result = visualize_run(
            args.paths[0],
            out_dir=args.out,
            conditions=args.conditions,
            episodes=args.episodes,
            fps=args.fps,
            max_steps=args.max_steps,
            device=args.device,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(result['files'])} files to {result['out_dir']}:")
    for path in result["files"]:
        print(f"  {path.name}")
    print()
    print(format_stats_table(list(result["stats"].values())))
    return 0
