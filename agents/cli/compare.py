"""``rims-compare``: aggregate finished runs (RIM vs LSTM) into tables, plots and a markdown report.

Usage::

    rims-compare multirun/2026-11-28/12-00-00                    # a sweep folder, report in <it>/compare
    rims-compare runs/a runs/b runs/c --out reports/doorkey --reps 5000 --wandb offline
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agents.analysis.compare import compare, log_to_wandb, logger_config, render_tables


def _parser() -> argparse.ArgumentParser:
    """The argument parser of ``rims-compare``."""
    parser = argparse.ArgumentParser(
        prog="rims-compare",
        description="Compare finished runs of one split: IQM and mean with 95% stratified-bootstrap CIs, "
        "P(improvement) of RIM over LSTM, learning curves; writes report.md, summary.csv/json and PNGs.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run folders or folders containing them")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: <first PATH>/compare)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument(
        "--wandb",
        choices=("auto", "offline", "online", "none"),
        default="auto",
        help="log the report to W&B (auto: as the runs were logged; none if they were not)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``rims-compare``; print the tables and where the report went.

    :param argv: arguments without the program name (default: ``sys.argv[1:]``).
    :returns: 0 on success, 2 when the runs cannot be compared (the reason goes to stderr).
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        comparison, files = compare(args.paths, out_dir=args.out, reps=args.reps, seed=args.seed)
        logger_cfg = logger_config(comparison.runs, args.wandb)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Split {comparison.split}: {len(comparison.runs)} runs, models {', '.join(comparison.models)}\n")
    print(render_tables(comparison))
    for note in comparison.notes:
        print(f"note: {note}")
    print(f"report: {files.report}")
    if log_to_wandb(comparison, files, logger_cfg):
        where = f"project {logger_cfg.get('project')}, group {logger_cfg.get('group')}"
        print(f"logged to W&B ({logger_cfg['mode']}, {where})")
    return 0
