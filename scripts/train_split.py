"""Train a recurrent agent on a split's train levels, with periodic OOD evaluation; save it.

A plain-argparse stand-in until the Hydra train CLI lands. Writes ``<out>/model.zip`` and
``<out>/ood_curves.csv`` (one row per periodic evaluation and test condition).

Usage::

    python scripts/train_split.py --split doorkey --core rim --frames 300000 --out runs/doorkey_rim
    python scripts/evaluate.py runs/doorkey_rim/model.zip --split doorkey --out runs/doorkey_rim/eval
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents import CORES, RecurrentA2C, RecurrentPPO
from agents.evaluation import OODEvalCallback, write_results
from agents.presets import A2C_MINIGRID, PPO_MINIGRID, core_kwargs
from envs.levels import make_condition_vec_env
from envs.splits import load_split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="doorkey")
    parser.add_argument("--core", choices=CORES, default="rim")
    parser.add_argument("--algo", choices=["ppo", "a2c"], default="ppo")
    parser.add_argument("--frames", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=50_000, help="frames between OOD evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        split = load_split(args.split)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.frames < 1 or args.eval_every < 1:
        print(
            f"error: --frames and --eval-every must be positive, got {args.frames} and {args.eval_every}",
            file=sys.stderr,
        )
        return 2
    env = make_condition_vec_env(split.train, args.n_envs, seed=args.seed)
    algo, kwargs = (RecurrentPPO, PPO_MINIGRID) if args.algo == "ppo" else (RecurrentA2C, A2C_MINIGRID)
    policy_kwargs = dict(core=args.core, core_kwargs=core_kwargs(args.core))
    model = algo("RecurrentPolicy", env, policy_kwargs=policy_kwargs, seed=args.seed, **kwargs)
    callback = OODEvalCallback(split, args.eval_every, args.eval_episodes)
    model.learn(args.frames, callback=callback, progress_bar=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.zip")
    if callback.history:
        write_results(callback.history, args.out, stem="ood_curves")
    print(f"saved {args.out / 'model.zip'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
