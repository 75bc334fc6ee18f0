"""A minimal MiniGrid VecEnv factory (the generalisation splits build on it)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid environments)
from minigrid.wrappers import ImgObsWrapper
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from envs.fast_obs import with_fast_observations
from envs.int_actions import with_int_actions

Wrapper = Callable[[gym.Env], gym.Env]


def make_minigrid_vec_env(
    env_id: str,
    n_envs: int = 8,
    seed: int = 0,
    wrapper: Wrapper | None = ImgObsWrapper,
    subprocess: bool = False,
    env_kwargs: dict | None = None,
    fast_observations: bool = True,
) -> VecEnv:
    """``n_envs`` copies of a MiniGrid environment as an SB3 VecEnv.

    :param env_id: a registered id, e.g. ``"MiniGrid-DoorKey-5x5-v0"``.
    :param n_envs: number of parallel environments (must be >= 1).
    :param seed: seed of the first environment; environment ``i`` gets ``seed + i``.
    :param wrapper: observation wrapper applied to each environment; the default keeps only
        the 7x7x3 symbolic image (``ImgObsWrapper``). ``None`` keeps MiniGrid's dict.
    :param subprocess: one process per environment (``SubprocVecEnv``) instead of in-process.
    :param env_kwargs: keyword arguments for ``gym.make``.
    :param fast_observations: build observations with :func:`envs.fast_obs.fast_gen_obs`
        (identical arrays, ~2.5x faster than MiniGrid's own code); ``False`` keeps MiniGrid's.
    Discrete actions reach the environment as Python ints (:class:`envs.int_actions.IntActions`).
    :raises ValueError: unknown ``env_id`` (listing similar registered ids) or ``n_envs < 1``.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("MiniGrid-"))
        raise ValueError(f"unknown environment id {env_id!r}; registered MiniGrid ids include {known[:12]} ...")
    return make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        wrapper_class=_wrapping(wrapper, fast_observations),
        env_kwargs=env_kwargs,
        vec_env_cls=SubprocVecEnv if subprocess else DummyVecEnv,
    )


def with_speed_ups(env: gym.Env, fast_observations: bool = True) -> gym.Env:
    """The env factories' speed-ups, none of which changes what the environment does: fast
    observations when ``fast_observations`` (:func:`envs.fast_obs.with_fast_observations`, MiniGrid
    only), then int actions (:func:`envs.int_actions.with_int_actions`, discrete actions only)."""
    return with_int_actions(with_fast_observations(env) if fast_observations else env)


def _wrapping(wrapper: Wrapper | None, fast_observations: bool) -> Wrapper:
    """:func:`with_speed_ups`, then ``wrapper``."""

    def wrap(env: gym.Env) -> gym.Env:
        env = with_speed_ups(env, fast_observations)
        return env if wrapper is None else wrapper(env)

    return wrap
