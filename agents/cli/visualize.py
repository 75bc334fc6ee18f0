"""``rims-visualize RUN_DIR``: activation GIFs, heatmaps and statistics of a trained RIM run."""

from __future__ import annotations

import argparse
import sys

from agents.visualize import format_stats_table, visualize_run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rims-visualize",
        description="Record episodes of a trained RIM run and show which units are active, per test condition.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder with config.yaml and model.zip")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default: RUN_DIR/visualize)")
    parser.add_argument(
        "--conditions", nargs="+", metavar="NAME", default=None, help="test conditions (default: all of the split's)"
    )
    parser.add_argument("--episodes", type=int, default=10, help="episodes per condition for the statistics")
    parser.add_argument("--fps", type=float, default=4.0, help="GIF frames per second")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many steps")
    parser.add_argument("--device", default="cpu", help="torch device to load the model on")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 invalid run or arguments)."""
    args = _parser().parse_args(argv)
    try:
        result = visualize_run(
            args.run_dir,
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
