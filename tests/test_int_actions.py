"""Discrete actions reach the environment as Python ints, with the same effect."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401
import numpy as np
import pytest
from gymnasium import spaces

from envs import IntActions, make_condition_env, make_minigrid_vec_env
from envs.splits import load_split


class _Recorder(gym.Wrapper):
    """Records the type of every action that reaches the wrapped environment."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.types: list[type] = []

    def step(self, action: Any) -> Any:
        self.types.append(type(action))
        return self.env.step(action)


def test_actions_arrive_as_python_ints_with_the_same_effect() -> None:
    plain = gym.make("MiniGrid-DoorKey-5x5-v0")
    recorder = _Recorder(gym.make("MiniGrid-DoorKey-5x5-v0"))
    wrapped = IntActions(recorder)
    plain.reset(seed=3)
    wrapped.reset(seed=3)
    rng = np.random.default_rng(0)
    for action in rng.integers(0, 7, size=200):
        expected = plain.step(np.int64(action))
        got = wrapped.step(np.int64(action))
        np.testing.assert_array_equal(got[0]["image"], expected[0]["image"])
        assert got[1:4] == expected[1:4]
        if expected[2] or expected[3]:
            plain.reset(seed=int(action))
            wrapped.reset(seed=int(action))
    assert set(recorder.types) == {int}


def test_other_actions_pass_unchanged() -> None:
    recorder = _Recorder(gym.make("MiniGrid-DoorKey-5x5-v0"))
    wrapped = IntActions(recorder)
    wrapped.reset(seed=0)
    for action in (2, np.array(2), np.array([1])):
        wrapped.step(action)
    assert recorder.types == [int, np.ndarray, np.ndarray]


def test_non_discrete_action_space_is_refused() -> None:
    env = gym.make("Pendulum-v1")
    assert isinstance(env.action_space, spaces.Box)
    with pytest.raises(ValueError, match="IntActions needs a Discrete action space, got Box"):
        IntActions(env)


def _wrappers(env: gym.Env) -> list[type]:
    kinds = []
    while isinstance(env, gym.Wrapper):
        kinds.append(type(env))
        env = env.env
    return kinds


def test_both_factories_pass_int_actions() -> None:
    vec_env = make_minigrid_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2)
    assert all(IntActions in _wrappers(env) for env in vec_env.envs)
    vec_env.reset()
    vec_env.step(np.array([2, 1]))  # numpy actions in, as SB3 gives them
    condition = next(iter(load_split("doorkey").test.values()))
    assert IntActions in _wrappers(make_condition_env(condition))
