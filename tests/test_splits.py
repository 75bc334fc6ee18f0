"""Generalisation splits, level seeds, perturbations and OOD evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents import RecurrentPPO
from agents.experiment.evaluation import OODEvalCallback, bootstrap_ci, evaluate_split, run_episodes, write_results
from envs.levels import make_condition_env, make_condition_vec_env
from envs.perturbations import PERTURBATIONS, is_solvable, reachable_cells
from envs.splits import SeedRange, available_splits, load_split, split_from_dict

SHIPPED = ["crossing", "doorkey", "empty", "fourrooms", "lava", "multiroom"]


def test_all_required_splits_ship() -> None:
    assert set(SHIPPED) <= set(available_splits())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_condition_builds_and_steps(name: str) -> None:
    split = load_split(name)
    assert "iid" in split.test and "iid_background" in split.test and "iid_distractors" in split.test
    assert not split.train.seeds.overlaps(split.test["iid"].seeds)
    for condition in [split.train, *split.test.values()]:
        env = make_condition_env(condition, sequential=True)
        obs, _ = env.reset()
        assert obs.shape == (7, 7, 3) and obs.dtype == np.uint8
        for _ in range(3):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert obs.shape == (7, 7, 3) and 0.0 <= reward <= 1.0
            if terminated or truncated:
                env.reset()
        env.close()


def test_overlapping_seeds_are_rejected() -> None:
    spec = {
        "name": "bad",
        "train": {"env_id": "MiniGrid-Empty-5x5-v0", "seeds": {"start": 0, "count": 100}},
        "test_seeds": {"start": 50, "count": 10},
    }
    with pytest.raises(ValueError, match=r"split 'bad': test seeds \[50, 60\) overlap train seeds \[0, 100\)"):
        split_from_dict(spec)


@pytest.mark.parametrize("name", SHIPPED)
def test_validation_levels_are_apart_from_train_and_test_levels(name: str) -> None:
    split = load_split(name)
    validation = split.condition("validation")
    assert validation.env_id == split.train.env_id and validation.env_kwargs == split.train.env_kwargs
    assert validation.perturbation is None
    assert not validation.seeds.overlaps(split.train.seeds) and not validation.seeds.overlaps(split.test["iid"].seeds)
    assert "validation" not in split.test and list(split.evaluable)[-1] == "validation"
    env = make_condition_env(validation, sequential=True)
    _, info = env.reset()
    assert validation.seeds.start <= info["level_seed"] < validation.seeds.stop
    env.close()


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ({"start": 90, "count": 20}, r"validation seeds \[90, 110\) overlap train seeds \[0, 100\)"),
        ({"start": 200, "count": 1}, r"validation seeds \[200, 201\) overlap test seeds \[200, 210\)"),
    ],
)
def test_validation_seeds_overlapping_train_or_test_are_rejected(seeds: dict[str, int], message: str) -> None:
    spec = {
        "name": "bad",
        "train": {"env_id": "MiniGrid-Empty-5x5-v0", "seeds": {"start": 0, "count": 100}},
        "test_seeds": {"start": 200, "count": 10},
        "validation_seeds": seeds,
    }
    with pytest.raises(ValueError, match=message):
        split_from_dict(spec)


def test_unknown_split_condition_and_perturbation_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown split 'nope'; valid splits: \[.*'doorkey'.*\]"):
        load_split("nope")
    with pytest.raises(KeyError, match=r"no condition 'huge'; valid: \['iid', "):
        load_split("doorkey").condition("huge")
    spec = {
        "name": "p",
        "train": {"env_id": "MiniGrid-Empty-5x5-v0", "seeds": {"start": 0, "count": 10}},
        "test_seeds": {"start": 100, "count": 10},
        "perturbations": ["fog"],
    }
    with pytest.raises(ValueError, match=r"unknown perturbations \['fog'\]; valid: \['background', 'distractors'\]"):
        split_from_dict(spec)


def test_a_split_is_added_with_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\ntrain: {env_id: MiniGrid-Empty-6x6-v0, seeds: {start: 0, count: 5}}\n"
        "test: {big: {env_id: MiniGrid-Empty-8x8-v0}}\ntest_seeds: {start: 10, count: 5}\n"
    )
    split = load_split(path)
    assert list(split.test) == ["iid", "big"] and split.train.seeds == SeedRange(0, 5)


def test_training_levels_stay_in_range_and_evaluation_covers_seeds_once() -> None:
    split = load_split("doorkey")
    train_env = make_condition_env(split.train)
    train_env.reset(seed=3)
    seeds = {_level_seed(train_env)}
    for _ in range(20):
        train_env.reset()
        seeds.add(_level_seed(train_env))
    assert all(split.train.seeds.start <= s < split.train.seeds.stop for s in seeds) and len(seeds) > 1
    vec = make_condition_vec_env(split.test["iid"], n_envs=3, sequential=True)
    vec.reset()
    first = sorted(e.level_seed for e in _level_wrappers(vec))
    assert first == [1_000_000, 1_000_001, 1_000_002]
    vec.close()


def _level_seed(env: gym.Env) -> int:
    while not hasattr(env, "level_seed"):
        env = env.env
    return env.level_seed


def _level_wrappers(vec: object) -> list:
    out = []
    for env in vec.envs:
        while not hasattr(env, "level_seed"):
            env = env.env
        out.append(env)
    return out


@pytest.mark.parametrize("perturbation", sorted(PERTURBATIONS))
@pytest.mark.parametrize(
    "env_id", ["MiniGrid-DoorKey-8x8-v0", "MiniGrid-LavaCrossingS9N2-v0", "MiniGrid-MultiRoom-N2-S4-v0"]
)
def test_perturbations_keep_shape_and_solvability_and_change_the_view(perturbation: str, env_id: str) -> None:
    changed = 0
    for seed in range(20):
        plain = gym.make(env_id)
        perturbed = PERTURBATIONS[perturbation](gym.make(env_id))
        plain_obs, _ = plain.reset(seed=seed)
        obs, _ = perturbed.reset(seed=seed)
        assert obs["image"].shape == plain_obs["image"].shape
        assert is_solvable(perturbed.unwrapped), f"{env_id} seed {seed} unsolvable after {perturbation}"
        changed += not np.array_equal(plain.unwrapped.grid.encode(), perturbed.unwrapped.grid.encode())
    assert changed >= 15


@pytest.mark.parametrize("perturbation", sorted(PERTURBATIONS))
@pytest.mark.parametrize(
    "env_id", ["MiniGrid-MultiRoom-N2-S4-v0", "MiniGrid-MultiRoom-N6-v0", "MiniGrid-DoorKey-6x6-v0"]
)
def test_perturbations_land_where_the_agent_can_go(perturbation: str, env_id: str) -> None:
    """MultiRoom's rooms fill a fraction of a 25x25 grid: a tile or object outside them is never seen."""
    for seed in range(10):
        plain = gym.make(env_id)
        perturbed = PERTURBATIONS[perturbation](gym.make(env_id))
        plain.reset(seed=seed)
        perturbed.reset(seed=seed)
        before, after = plain.unwrapped.grid.encode(), perturbed.unwrapped.grid.encode()  # (W, H, 3)
        cells = {(int(x), int(y)) for x, y in zip(*np.nonzero((before != after).any(-1)), strict=True)}
        assert cells and cells <= reachable_cells(plain.unwrapped), f"{env_id} seed {seed}: {perturbation} off-level"
        if perturbation == "distractors":
            assert len(cells) == perturbed.count


def test_solvability_check_detects_a_blocked_goal() -> None:
    from minigrid.core.world_object import Wall

    env = gym.make("MiniGrid-Empty-5x5-v0")
    env.reset(seed=0)
    base = env.unwrapped
    assert is_solvable(base)
    goal = next(
        (x, y) for y in range(5) for x in range(5) if base.grid.get(x, y) and base.grid.get(x, y).type == "goal"
    )
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        x, y = goal[0] + dx, goal[1] + dy
        if base.grid.get(x, y) is None and (x, y) != tuple(base.agent_pos):
            base.grid.set(x, y, Wall())
    assert not is_solvable(base)


def test_bootstrap_ci_brackets_the_mean() -> None:
    values = np.random.default_rng(0).random(200)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and high - low < 0.2
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def _tiny_ppo(core: str) -> RecurrentPPO:
    """An untrained 16-wide recurrent PPO on the empty split's train levels (2 envs)."""
    env = make_condition_vec_env(load_split("empty").train, n_envs=2)
    kwargs = dict(n_steps=16, batch_size=32, n_epochs=1)
    return RecurrentPPO(
        "RecurrentPolicy", env, policy_kwargs=dict(core=core, core_kwargs=dict(hidden_size=16)), **kwargs
    )


@pytest.fixture(scope="module")
def tiny_model() -> RecurrentPPO:
    model = _tiny_ppo("gru")
    model.learn(64)
    return model


def test_evaluate_writes_files_with_numbers_in_range(tiny_model: RecurrentPPO, tmp_path: Path) -> None:
    split = load_split("empty")
    rows = evaluate_split(tiny_model, split, ["iid", "empty_6x6"], episodes=6, n_envs=4)
    assert [(r["condition"], r["mode"]) for r in rows] == [
        ("iid", "deterministic"), ("iid", "sampled"), ("empty_6x6", "deterministic"), ("empty_6x6", "sampled")
    ]  # fmt: skip
    for r in rows:
        assert r["episodes"] == 6
        assert 0.0 <= r["return_ci_low"] <= r["mean_return"] <= r["return_ci_high"] <= 1.0
        assert 0.0 <= r["mean_success"] <= 1.0 and r["mean_length"] >= 1
    json_path, csv_path = write_results(rows, tmp_path)
    assert json.loads(json_path.read_text()) == rows
    assert csv_path.read_text().splitlines()[0].startswith("split,condition,mode,episodes")


def test_episodes_are_the_same_seeds_whatever_the_parallelism(tiny_model: RecurrentPPO) -> None:
    condition = load_split("empty").test["iid"]
    one = run_episodes(tiny_model, condition, 5, deterministic=True, n_envs=1)
    three = run_episodes(tiny_model, condition, 5, deterministic=True, n_envs=3)
    assert one.level_seeds == three.level_seeds == list(range(1_000_000, 1_000_005))
    assert one.returns == three.returns


def test_evaluate_cli_exit_codes(tiny_model: RecurrentPPO, tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "model.zip"
    tiny_model.save(path)
    script = Path(__file__).resolve().parent.parent / "scripts" / "evaluate.py"
    ok = subprocess.run(
        [sys.executable, str(script), str(path), "--split", "empty", "--conditions", "iid", "--episodes", "4",
         "--modes", "deterministic", "--out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "eval.json").is_file() and "iid" in ok.stdout
    bad = subprocess.run([sys.executable, str(script), str(path), "--split", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown split 'nope'" in bad.stderr


def test_ood_callback_logs_every_condition() -> None:
    split = load_split("empty")
    model = _tiny_ppo("lstm")
    callback = OODEvalCallback(split, every_frames=32, episodes=2, conditions=["iid", "empty_6x6"], n_envs=2)
    model.learn(64, callback=callback)
    assert {row["condition"] for row in callback.history} == {"iid", "empty_6x6"}
    assert sorted({row["frames"] for row in callback.history}) == [32, 64]


def test_sampled_evaluation_repeats_whatever_ran_before(tiny_model: RecurrentPPO) -> None:
    import torch

    split = load_split("empty")
    first = evaluate_split(tiny_model, split, ["iid"], episodes=4, modes=["sampled"], n_envs=2)
    torch.rand(100)  # other work consumes the global RNG
    again = evaluate_split(tiny_model, split, ["iid"], episodes=4, modes=["sampled"], n_envs=2)
    assert first == again
