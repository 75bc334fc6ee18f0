"""Selection statistics (issue 26): each statistic on hand-made masks with known answers, the masks read from
the state change against the core's own record, and the columns a tiny training run writes."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from agents.analysis.activations import summarize_activations
from agents.analysis.visualize import save_activation_heatmap
from agents.cores import make_core
from agents.experiment.evaluation import run_episodes
from agents.experiment.recording import record_episode
from agents.experiment.run import build_model, train, validate
from agents.experiment.selection_log import EvalMasks, changed_units, mask_layout
from agents.experiment.selection_stats import (
    CASES,
    always_never,
    collapse_metric,
    distinct_sets,
    episode_ids,
    episode_share,
    frozen_from,
    modal_share,
    selection_case,
    selection_summary,
    set_codes,
    switch_rate,
    unit_frequency,
    usage_entropy,
)
from envs.factors import FACTORS
from envs.levels import make_condition_vec_env

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = [
    "env=empty", "total_frames=64", "n_envs=2", "eval.every_frames=32", "eval.episodes=1", "eval.final_episodes=1",
    "agent.n_steps=16", "agent.batch_size=32", "model.hidden_size=16", "logger=none", "eval.gifs=false",
    "progress_bar=false",
]  # fmt: skip


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, *TINY])


def _masks(rows: list[str]) -> np.ndarray:
    """``["1100", "0110"]`` -> ``(T, 1, R)`` bool: one environment, a step per string."""
    return np.array([[[c == "1" for c in row]] for row in rows])


def _starts(flags: list[int]) -> np.ndarray:
    return np.array(flags, dtype=bool)[:, None]  # (T, 1)


def test_frequency_entropy_and_collapse_of_known_usage() -> None:
    masks = _masks(["1100", "1100", "1010", "1001"])[:, 0]  # (4, 4)
    np.testing.assert_allclose(unit_frequency(masks), [1.0, 0.5, 0.25, 0.25])
    assert usage_entropy(np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(1.0)
    assert usage_entropy(np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(math.log(3) / math.log(4))
    assert usage_entropy(np.array([1.0, 0.0])) == 0.0
    # Mod_Arch: R / (R - 1) * sum max(1/R - p, 0); one unit doing everything is 1, uniform use 0
    assert collapse_metric(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert collapse_metric(np.array([0.3, 0.3, 0.3, 0.3])) == pytest.approx(0.0)
    assert collapse_metric(np.array([0.5, 0.5, 0.0, 0.0])) == pytest.approx(4 / 3 * 0.5)
    # scaled for top-k: the same k units at every step is 1
    assert collapse_metric(np.array([1.0, 1.0, 1.0, 0.0]), k=3) == pytest.approx(1.0)
    assert collapse_metric(np.array([0.75, 0.75, 0.75, 0.75]), k=3) == pytest.approx(0.0)
    assert collapse_metric(np.array([1.0, 1.0]), k=2) == 0.0
    assert always_never(np.array([1.0, 0.995, 0.5, 0.005])) == ([0, 1], [3])


def test_switch_rate_counts_only_pairs_within_an_episode() -> None:
    masks = _masks(["1100", "1010", "0101", "0101"])
    # pairs (0,1): 2 flags change; (1,2): a new episode starts at 2, not counted; (2,3): none
    assert switch_rate(masks, _starts([1, 0, 1, 0])) == pytest.approx(2 / (2 * 4))
    assert switch_rate(masks, _starts([1, 0, 0, 0])) == pytest.approx((2 + 4 + 0) / (3 * 4))
    valid = np.array([True, True, True, False])[:, None]
    assert switch_rate(masks, _starts([1, 0, 0, 0]), valid) == pytest.approx(6 / (2 * 4))
    assert switch_rate(masks[:1], _starts([1])) == 0.0


def test_a_freeze_spans_the_last_updates_and_a_single_still_update_is_a_dip() -> None:
    frames = [1000, 2000, 3000, 4000, 5000, 6000]
    assert frozen_from(frames, [0.2, 0.1, 0.005, 0.0, 0.002, 0.0]) == 3000
    assert frozen_from(frames, [0.2, 0.0, 0.0, 0.0, 0.1, 0.0]) is None  # still at the end for one update only
    assert frozen_from(frames, [0.2, 0.0, 0.0, 0.0, 0.1, 0.0], min_updates=1) == 6000
    assert frozen_from(frames, [0.0] * 6) == 1000
    assert frozen_from([], []) is None
    with pytest.raises(ValueError, match="min_updates must be >= 1, got 0"):
        frozen_from(frames, [0.0] * 6, min_updates=0)


def test_sets_episodes_and_shares() -> None:
    codes = set_codes(_masks(["1100", "1100", "0011", "1100"])[:, 0])
    assert codes.tolist() == [3, 3, 12, 3]
    assert distinct_sets(codes) == 2
    starts = np.array([[1, 1], [0, 0], [1, 0]], dtype=bool)  # (T=3, N=2)
    ids = episode_ids(starts)
    assert ids[0, 0] == ids[1, 0] != ids[2, 0] and ids[0, 1] == ids[1, 1] == ids[2, 1] != ids[0, 0]
    assert modal_share(np.array([1, 1, 1, 2])) == pytest.approx(0.75)
    assert episode_share(np.array([1, 1, 2, 2]), np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert episode_share(np.array([1, 2, 2, 2]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


def test_the_three_cases_and_always_on_units_do_not_decide() -> None:
    """One set everywhere: fixed; a set per episode, held: per-episode (switch rate 0); one unit always on while the
    others rotate within episodes: switching, not collapsed."""
    starts = _starts([1, 0, 0, 1, 0, 0])
    fixed = _masks(["1100"] * 6)
    per_episode = _masks(["1100"] * 3 + ["1010"] * 3)
    rotating = _masks(["1100", "1010", "1001", "1100", "1010", "1001"])
    cases = {}
    for name, masks in (("fixed", fixed), ("per", per_episode), ("rotating", rotating)):
        cases[name] = selection_summary(masks, starts, k=2)
    assert [CASES[int(cases[n]["case"])] for n in ("fixed", "per", "rotating")] == list(CASES)
    assert cases["per"]["switch_rate"] == 0.0 and cases["per"]["distinct_sets"] == 2
    assert cases["rotating"]["always_on"] == 1 and cases["rotating"]["never_on"] == 0
    assert cases["fixed"]["collapse"] == pytest.approx(1.0) and cases["fixed"]["never_on"] == 2
    assert selection_case(0.995, 1.0) == "fixed" and selection_case(0.5, 0.985) == "switching"
    # a first step chosen from the zero state, then one set held: not switching
    first_then_held = _masks(["0011", "1100", "1100", "0011", "1010", "1010"])
    assert CASES[int(selection_summary(first_then_held, starts)["case"])] == "per-episode"
    assert selection_summary(fixed, starts, np.zeros((6, 1), dtype=bool)) == {}


def test_changed_units_are_the_cores_own_active_masks() -> None:
    """The mask read from the state change equals the RIMInfo mask on the acting path, resets included."""
    torch.manual_seed(0)
    cfg = _compose(["model=rim", "model.k=2"])
    env = make_condition_vec_env(validate(cfg).train, 2)
    model = build_model(cfg, env)
    env.close()
    core = model.policy.core
    num_units, k = mask_layout(core)
    assert (num_units, k) == (4, 2)
    h = torch.zeros(1, 3, core.hidden_size)
    states = (h, h.clone())
    with torch.no_grad():
        for t in range(6):
            features = torch.randn(1, 3, core.module.input_size) * (1 + t)
            starts = torch.tensor([1.0 if t in (0, 3) else 0.0, 0.0 if t else 1.0, float(t == 4)])
            keep = (1.0 - starts).view(1, -1, 1)
            _, _, info = core.module(features, (states[0] * keep, states[1] * keep), return_info=True)
            _, new = core(features, states, starts.view(1, -1))
            as_numpy = [tuple(s.numpy() for s in pair) for pair in (states, new)]
            found = changed_units(*as_numpy, starts.numpy(), num_units)  # (N, U)
            np.testing.assert_array_equal(found, info.active[0, 0].numpy(), err_msg=str(t))
            assert found.sum(axis=1).tolist() == [2, 2, 2]
            states = new


def test_lstm_has_no_layout_and_eval_of_a_rim_records_statistics(tmp_path: Path) -> None:
    cfg = _compose(["model=lstm"])
    env = make_condition_vec_env(validate(cfg).train, 2)
    model = build_model(cfg, env)
    assert mask_layout(model.policy.core) is None
    condition = validate(cfg).condition("iid")
    assert run_episodes(model, condition, 2, True, n_envs=2).selection == {}
    rim = build_model(_compose(["model=rim"]), env)
    env.close()
    stats = run_episodes(rim, condition, 3, True, n_envs=2).selection
    assert {"switch_rate", "usage_entropy", "collapse", "distinct_sets", "case", "freq_u3"} <= set(stats)
    assert sum(stats[f"freq_u{u}"] for u in range(4)) == pytest.approx(3.0)
    recording = record_episode(rim, condition, max_steps=5, render=False)  # factors under the heat-map
    assert list(recording.factors) == list(FACTORS) and all(len(v) == 5 for v in recording.factors.values())
    assert save_activation_heatmap(recording, tmp_path / "heatmap.png").stat().st_size > 0
    summary = summarize_activations([recording, recording])
    assert summary["selection_case"] in CASES and len(summary["specialisation"]) == 5 * len(FACTORS)


def test_training_writes_rollout_and_evaluation_columns(tmp_path: Path) -> None:
    train(_compose(["model=rim", "eval.conditions=[iid]"]), tmp_path / "rim")
    with (tmp_path / "rim" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {"sel/rollout/switch_rate", "sel/rollout/usage_entropy", "sel/rollout/collapse", "sel/rollout/case",
            "sel/rollout/distinct_sets", "sel/rollout/freq_u0", "sel/iid/switch_rate"} <= columns  # fmt: skip
    assert all(row["sel/rollout/switch_rate"] != "" for row in rows)
    assert "sel_switch_rate" in (tmp_path / "rim" / "ood_curves.csv").read_text()
    train(_compose(["model=lstm", "eval.conditions=[iid]"]), tmp_path / "lstm")
    assert "sel/" not in (tmp_path / "lstm" / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("initial", ["learned", "random"])
def test_an_own_initial_state_leaves_every_episodes_first_step_out(initial: str) -> None:
    """With a learned or random initial state the state before a first step is not the one acting sees, so
    evaluation statistics count only the later steps of each episode; with zeros the first step counts."""
    torch.manual_seed(0)
    counted = {}
    for name in ("zeros", initial):
        core = make_core("rim", 8, hidden_size=16, num_units=4, k=2, initial_state=name)
        masks = EvalMasks(SimpleNamespace(core=core))
        states = (torch.zeros(1, 2, 16), torch.zeros(1, 2, 16))
        with torch.no_grad():
            for t in range(4):
                starts = torch.tensor([float(t in (0, 2)), float(t == 0)])
                _, new = core(torch.randn(1, 2, 8), states, starts.view(1, -1))
                previous = None if t == 0 else tuple(s.numpy() for s in states)
                masks.add(previous, tuple(s.numpy() for s in new), starts.numpy() > 0, np.ones(2, dtype=bool))
                states = new
        counted[name] = int(np.stack(masks.valid).sum())
        assert masks.summary()["always_on"] + masks.summary()["never_on"] <= 4
    assert counted == {"zeros": 8, initial: 5}  # 3 episode starts left out
