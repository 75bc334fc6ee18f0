"""Environments restricted to a split's level seeds, for training and for evaluation."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid environments)
import numpy as np
from minigrid.wrappers import ImgObsWrapper
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from envs.minigrid import with_speed_ups
from envs.perturbations import PERTURBATIONS
from envs.splits import Condition, SeedRange


class LevelSeeds(gym.Wrapper):
    """Play only levels whose seeds lie in ``seeds``.

    Random mode (training): each reset draws a level seed uniformly from the range, with an
    RNG seeded by the first ``reset(seed=...)``. Sequential mode (evaluation): resets play
    ``seeds.start + first, + first + stride, ...`` in order, so ``stride`` parallel copies with
    ``first = 0 .. stride - 1`` cover consecutive seeds exactly once.

    :param seeds: allowed level seeds.
    :param sequential: evaluation order instead of random draws.
    :param first: offset of the first sequential episode.
    :param stride: step between sequential episodes.
    """

    def __init__(
        self, env: gym.Env, seeds: SeedRange, sequential: bool = False, first: int = 0, stride: int = 1
    ) -> None:
        super().__init__(env)
        self.seeds, self.sequential, self.stride = seeds, sequential, stride
        self.episode = first
        self._rng: np.random.Generator | None = None
        self.level_seed: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if self.sequential:
            self.level_seed = self.seeds.start + self.episode % self.seeds.count
            self.episode += self.stride
        else:
            if self._rng is None or seed is not None:
                self._rng = np.random.default_rng(seed)
            self.level_seed = self.seeds.start + int(self._rng.integers(self.seeds.count))
        obs, info = self.env.reset(seed=self.level_seed, options=options)
        info["level_seed"] = self.level_seed
        return obs, info


def make_condition_env(
    condition: Condition,
    sequential: bool = False,
    first: int = 0,
    stride: int = 1,
    monitor: bool = True,
    render_mode: str | None = None,
) -> gym.Env:
    """One environment of ``condition``: base env -> perturbation -> level seeds -> image only.

    The environment gets the factories' speed-ups (:func:`envs.minigrid.with_speed_ups`: fast
    observations, int actions), which change nothing it does.

    :param condition: what to build (see :mod:`envs.splits`).
    :param sequential: evaluation order of level seeds (see :class:`LevelSeeds`).
    :param render_mode: gymnasium render mode, e.g. ``"rgb_array"`` for recording frames.
    """
    env = with_speed_ups(gym.make(condition.env_id, render_mode=render_mode, **condition.env_kwargs))
    if condition.perturbation is not None:
        env = PERTURBATIONS[condition.perturbation](env)
    env = LevelSeeds(env, condition.seeds, sequential=sequential, first=first, stride=stride)
    env = ImgObsWrapper(env)
    return Monitor(env) if monitor else env


def make_condition_vec_env(
    condition: Condition, n_envs: int, seed: int = 0, sequential: bool = False, subprocess: bool = False
) -> VecEnv:
    """``n_envs`` copies of :func:`make_condition_env` as an SB3 VecEnv.

    Random mode (training) seeds copy ``i`` with ``seed + i``; sequential mode (evaluation)
    makes the copies play disjoint, consecutive level seeds.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")

    def factory(index: int) -> Any:
        return lambda: make_condition_env(condition, sequential=sequential, first=index, stride=n_envs)

    vec_env = (SubprocVecEnv if subprocess else DummyVecEnv)([factory(i) for i in range(n_envs)])
    vec_env.seed(seed)
    return vec_env
