"""Evaluate trained agents on every test condition of a generalisation split.

For each model and condition: ``--episodes`` episodes on fixed level seeds (the first seeds of
the split's test range), in deterministic and/or sampled action mode; mean return, success
rate and mean episode length with 95% bootstrap confidence intervals. Writes
``<out>/eval.json`` and ``<out>/eval.csv`` and prints a table.

Models are run folders written by ``rims-train`` (their split and algorithm come from
``config.yaml``) or saved ``.zip`` files (then ``--split`` is required and ``--algo`` says
which algorithm saved them).

Usage::

    rims-evaluate runs/2026-11-28/10-00-00_ppo_rim_doorkey_s0 --out runs/eval
    python scripts/evaluate.py runs/ppo_rim.zip runs/ppo_lstm.zip --split doorkey --out runs/eval
    python scripts/evaluate.py model.zip --split configs/env/mysplit.yaml --conditions iid doorkey_8x8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from agents.experiment.evaluation import MODES, evaluate_split, format_table, write_results
from agents.experiment.faults import describe
from agents.experiment.recovery import unreadable
from agents.experiment.run import ALGORITHMS
from agents.experiment.run_folder import load_run, load_run_config, run_split
from envs.splits import Split, load_split


def _run_split(paths: list[Path]) -> Split:
    """The split of the given run folders (all must share it) when ``--split`` is not given."""
    if not all(p.is_dir() for p in paths):
        raise ValueError("--split is required when evaluating .zip files")
    splits = [run_split(load_run_config(p), source=str(p / "config.yaml")) for p in paths]
    names = {s.name for s in splits}
    if len(names) > 1:
        raise ValueError(f"run folders use different splits {sorted(names)}; pass --split")
    return splits[0]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _zip_name(path: Path) -> str:
    return path.parent.name if path.stem == "model" else path.stem


def _load(path: Path, algo: str, device: str) -> Any:
    """The model of a run folder (falling back to its checkpoint when ``model.zip`` is damaged) or of a ``.zip``.

    :raises ValueError: the run folder or the file cannot be used (the message names the file and why).
    """
    if path.is_dir():
        return load_run(path, device)[0]
    try:
        return ALGORITHMS[algo].load(path, device=device)
    except Exception as error:  # SB3's, zipfile's and torch's many ways to fail on bad bytes
        raise ValueError(unreadable(path, error, verified=False)) from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="run folders or saved models (.zip)")
    parser.add_argument("--split", help="split name (configs/env/<name>.yaml) or a YAML path (default: the run's)")
    parser.add_argument("--conditions", nargs="+", default=None, help="test conditions (default: all)")
    parser.add_argument("--episodes", type=_positive, default=100)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), default="ppo")
    parser.add_argument("--n-envs", type=_positive, default=8, help="parallel environments per condition")
    parser.add_argument("--device", default="cpu", help="torch device to evaluate on")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        split = load_split(args.split) if args.split else _run_split(args.models)
        names = list(split.test) if args.conditions is None else [split.condition(c).name for c in args.conditions]
    except (ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.models if not (p.is_file() or (p / "model.zip").is_file())]
    if missing:
        print(f"error: neither model files nor run folders: {missing}", file=sys.stderr)
        return 2
    rows = []
    start = time.perf_counter()
    with (
        logging_redirect_tqdm(),
        tqdm(total=len(args.models) * len(names) * len(args.modes), desc="evaluate", unit="cond") as bar,
    ):
        for path in args.models:
            try:
                model = _load(path, args.algo, args.device)
            except (ValueError, OSError) as error:  # a damaged run folder or model file, an unreadable disk
                bar.close()
                print(f"error: {describe(error) if isinstance(error, OSError) else error}", file=sys.stderr)
                return 2
            for row in evaluate_split(model, split, names, args.episodes, args.modes, args.n_envs, progress=bar):
                rows.append({"run": path.name if path.is_dir() else _zip_name(path), **row})
    elapsed = time.perf_counter() - start
    json_path, csv_path = write_results(rows, args.out)
    print(format_table(rows))
    episodes = sum(r["episodes"] for r in rows)
    print(f"{episodes} episodes in {elapsed:.1f} s ({100 * elapsed / episodes:.2f} s per 100 episodes)")
    print(f"wrote {json_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
