"""envs.fast_obs: the one-pass observation equals MiniGrid's own, and the factories use it."""

from __future__ import annotations

import pickle

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid environments)
import numpy as np
import pytest
from minigrid.envs import EmptyEnv
from minigrid.minigrid_env import MiniGridEnv

from envs import PERTURBATIONS, FastObservations, factors, fast_gen_obs, make_minigrid_vec_env
from envs.levels import make_condition_env
from envs.memory import CueMemoryEnv
from envs.splits import load_split

ENV_IDS = [
    "MiniGrid-DoorKey-5x5-v0",
    "MiniGrid-DoorKey-8x8-v0",
    "MiniGrid-KeyCorridorS3R2-v0",
    "MiniGrid-LavaCrossingS9N1-v0",
    "MiniGrid-SimpleCrossingS9N2-v0",
    "MiniGrid-MultiRoom-N2-S4-v0",
    "MiniGrid-ObstructedMaze-1Dlhb-v0",
    "MiniGrid-Fetch-5x5-N2-v0",
    "MiniGrid-BlockedUnlockPickup-v0",
    "MiniGrid-Dynamic-Obstacles-6x6-v0",
    "MiniGrid-MemoryS7-v0",
    "MiniGrid-LockedRoom-v0",
    "MiniGrid-FourRooms-v0",
    "MiniGrid-Empty-Random-6x6-v0",
]


def _assert_same_over_play(env: MiniGridEnv, steps: int = 400, seed: int = 0) -> None:
    """Random play (all actions, so keys are carried, doors opened and objects dropped)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for step in range(steps):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset(seed=int(rng.integers(10_000)))
        expected, got = MiniGridEnv.gen_obs(env), fast_gen_obs(env)
        assert got["image"].dtype == expected["image"].dtype == np.uint8
        assert got["image"].flags.c_contiguous
        np.testing.assert_array_equal(got["image"], expected["image"], err_msg=f"step {step}")
        assert (got["direction"], got["mission"]) == (expected["direction"], expected["mission"])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_image_as_minigrid(env_id: str) -> None:
    _assert_same_over_play(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("view_size", [3, 5, 9])
def test_other_view_sizes(view_size: int) -> None:
    _assert_same_over_play(gym.make("MiniGrid-DoorKey-8x8-v0", agent_view_size=view_size).unwrapped)


def test_see_through_walls() -> None:
    env = gym.make("MiniGrid-KeyCorridorS3R2-v0").unwrapped
    env.see_through_walls = True
    _assert_same_over_play(env)


@pytest.mark.parametrize("perturbation", sorted(PERTURBATIONS))
def test_perturbed_levels(perturbation: str) -> None:
    env = PERTURBATIONS[perturbation](FastObservations(gym.make("MiniGrid-DoorKey-8x8-v0")))
    assert env.unwrapped.gen_obs.func is fast_gen_obs
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs["image"], MiniGridEnv.gen_obs(env.unwrapped)["image"])
    _assert_same_over_play(env.unwrapped, steps=100)


def test_factory_uses_fast_observations_and_keeps_the_observations() -> None:
    fast = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=2, seed=4)
    stock = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=2, seed=4, fast_observations=False)
    assert all(env.unwrapped.gen_obs.func is fast_gen_obs for env in fast.envs)
    assert all(env.unwrapped.gen_obs.__func__ is MiniGridEnv.gen_obs for env in stock.envs)
    np.testing.assert_array_equal(fast.reset(), stock.reset())
    rng = np.random.default_rng(0)
    for _ in range(200):
        actions = rng.integers(7, size=2)
        got, expected = fast.step(actions), stock.step(actions)
        for a, b in zip(got[:3], expected[:3], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:.*render_mode")
def test_factory_leaves_other_environments_alone() -> None:
    gym.register("TestCueMemory-v0", entry_point=CueMemoryEnv)
    try:
        env = make_minigrid_vec_env("TestCueMemory-v0", n_envs=1, wrapper=None)
        assert env.reset().shape == (1, 7, 7, 3)
    finally:
        del gym.registry["TestCueMemory-v0"]


def test_own_observation_code_is_kept() -> None:
    class OwnObservation(EmptyEnv):
        def gen_obs(self) -> dict:
            return super().gen_obs()

    env = FastObservations(OwnObservation(size=5))
    assert not env.active
    assert env.unwrapped.gen_obs.__func__ is OwnObservation.gen_obs


def test_wrapped_environment_pickles_and_wraps_twice() -> None:
    env = FastObservations(FastObservations(gym.make("MiniGrid-DoorKey-5x5-v0")))
    assert env.active and env.env.active
    env.reset(seed=1)
    copy = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(copy.unwrapped.gen_obs()["image"], env.unwrapped.gen_obs()["image"])
    assert copy.unwrapped.gen_obs.func is fast_gen_obs and copy.unwrapped.gen_obs.args[0] is copy.unwrapped


def test_not_minigrid_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs a MiniGrid environment, got CueMemoryEnv"):
        FastObservations(CueMemoryEnv())


@pytest.mark.parametrize(
    ("split", "condition"),
    [("doorkey", "iid"), ("doorkey", "iid_background"), ("doorkey", "iid_distractors"), ("multiroom", "multiroom_n6")],
)
def test_factors_from_the_one_pass_view_equal_minigrids_view(
    split: str, condition: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env_factors reads the view in one pass; MiniGrid's gen_obs_grid gives the same factors at every step."""
    env = make_condition_env(load_split(split).condition(condition), sequential=True, monitor=False)
    rng = np.random.default_rng(1)
    env.reset()
    seen = set()
    for step in range(300):
        fast = factors.env_factors(env)
        with monkeypatch.context() as patch:
            patch.setattr(factors, "fast_view", lambda base: None)
            slow = factors.env_factors(env)
        assert fast == slow, f"step {step}"
        seen |= {name for name, value in fast.items() if value}
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset()
    env.close()
    assert seen, "random play saw no factor at all"
