"""Evaluate trained agents on every test condition of a generalisation split.

For each model and condition: ``--episodes`` episodes on fixed level seeds (the first seeds of
the split's test range), in deterministic and/or sampled action mode; mean return, success
rate and mean episode length with 95% bootstrap confidence intervals. Writes
``<out>/eval.json`` and ``<out>/eval.csv`` and prints a table.

Usage::

    python scripts/evaluate.py runs/ppo_rim.zip runs/ppo_lstm.zip --split doorkey --out runs/eval
    python scripts/evaluate.py model.zip --split configs/env/mysplit.yaml --conditions iid doorkey_8x8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from agents import RecurrentA2C, RecurrentPPO
from agents.evaluation import MODES, evaluate_split, format_table, write_results
from envs.splits import load_split

ALGOS = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="saved models (.zip)")
    parser.add_argument("--split", required=True, help="split name (configs/env/<name>.yaml) or a YAML path")
    parser.add_argument("--conditions", nargs="*", default=None, help="test conditions (default: all)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--algo", choices=sorted(ALGOS), default="ppo")
    parser.add_argument("--n-envs", type=int, default=8, help="parallel environments per condition")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        split = load_split(args.split)
        names = list(split.test) if args.conditions is None else [split.condition(c).name for c in args.conditions]
    except (ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.models if not p.is_file()]
    if missing:
        print(f"error: model files not found: {missing}", file=sys.stderr)
        return 2
    rows = []
    start = time.perf_counter()
    with tqdm(total=len(args.models) * len(names) * len(args.modes), desc="evaluate", unit="cond") as bar:
        for path in args.models:
            model = ALGOS[args.algo].load(path, device="cpu")
            for row in evaluate_split(model, split, names, args.episodes, args.modes, args.n_envs, progress=bar):
                rows.append({"run": path.parent.name if path.stem == "model" else path.stem, **row})
    elapsed = time.perf_counter() - start
    json_path, csv_path = write_results(rows, args.out)
    print(format_table(rows))
    episodes = sum(r["episodes"] for r in rows)
    print(f"{episodes} episodes in {elapsed:.1f} s ({100 * elapsed / episodes:.2f} s per 100 episodes)")
    print(f"wrote {json_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
