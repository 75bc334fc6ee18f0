"""MiniGrid environments for the suite: generalisation splits, perturbations, VecEnv factories.

Never imports :mod:`agents`. Splits are data (``configs/env/<name>.yaml``), see :mod:`envs.splits`.
"""

from envs.fast_obs import FastObservations, fast_gen_obs
from envs.int_actions import IntActions
from envs.levels import LevelSeeds, make_condition_env, make_condition_vec_env
from envs.memory import CueMemoryEnv
from envs.minigrid import make_minigrid_vec_env
from envs.perturbations import PERTURBATIONS, BackgroundTiles, Distractors, is_solvable
from envs.splits import Condition, SeedRange, Split, available_splits, load_split

__all__ = [
    "PERTURBATIONS",
    "BackgroundTiles",
    "Condition",
    "CueMemoryEnv",
    "Distractors",
    "FastObservations",
    "IntActions",
    "LevelSeeds",
    "SeedRange",
    "Split",
    "available_splits",
    "fast_gen_obs",
    "is_solvable",
    "load_split",
    "make_condition_env",
    "make_condition_vec_env",
    "make_minigrid_vec_env",
]
