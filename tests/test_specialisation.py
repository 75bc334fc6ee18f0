"""Specialisation (issue 26): environment factors, mutual information against the circular-shift baseline, and
where the per-seed numbers and the selection case go (seed record, compare's modularity curves)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from minigrid.core.world_object import Key

from agents.analysis.compare.runs import MAX_CURVE_POINTS, selection_curves
from agents.analysis.reproduce.seed_store import SeedStore, derived_case
from agents.analysis.specialisation import (
    SET,
    aggregate_specialisation,
    circular_shifts,
    entropy_bits,
    mutual_information,
    specialisation,
)
from envs.factors import FACTORS, env_factors, perturbed_cells
from envs.levels import make_condition_env
from envs.splits import load_split


def test_plug_in_mutual_information_of_known_pairs() -> None:
    x = np.array([0, 1] * 50)
    assert mutual_information(x, x) == pytest.approx(1.0)
    assert mutual_information(x, 1 - x) == pytest.approx(1.0)
    assert mutual_information(x, np.repeat([0, 1], 50)) == pytest.approx(0.0, abs=1e-12)  # independent by design
    assert mutual_information(np.zeros(10), x[:10]) == 0.0
    assert entropy_bits(np.array([0, 1, 2, 3])) == pytest.approx(2.0)
    three = np.array([0, 1, 2] * 20)
    assert mutual_information(three, three) == pytest.approx(np.log2(3))


def test_circular_shifts_skip_an_episode_length_when_they_can() -> None:
    shifts = circular_shifts(100, 20, count=500)
    assert shifts.min() >= 20 and shifts.max() <= 80
    short = circular_shifts(30, 20, count=100)
    assert short.min() >= 1 and short.max() <= 29
    assert len(circular_shifts(1, 1)) == 0


def test_a_unit_that_follows_a_factor_stands_out_of_its_baseline() -> None:
    rng = np.random.default_rng(0)
    lengths = [40] * 10
    # the factor turns on part-way through each episode (like carrying a key) and stays on
    factor = np.concatenate([(np.arange(n) >= rng.integers(5, n - 5)).astype(int) for n in lengths])
    masks = np.stack([factor == 1, rng.random(len(factor)) < 0.5, factor == 0], axis=1)  # (S, 3)
    rows = specialisation(masks, {"carrying_key": factor, "constant": np.zeros_like(factor)}, lengths,
                          ["u0", "u1", "u2"], permutations=100)  # fmt: skip
    by = {(r["variable"], r["factor"]): r for r in rows}
    assert [r["variable"] for r in rows[:4]] == ["u0", "u1", "u2", SET]
    tied = by[("u0", "carrying_key")]
    assert tied["mi_bits"] == pytest.approx(entropy_bits(factor))
    assert tied["mi_bits"] > tied["baseline_p95"] and tied["excess_bits"] > 0.5 and tied["p_value"] < 0.02
    assert by[(SET, "carrying_key")]["mi_bits"] == pytest.approx(tied["mi_bits"])
    noise = by[("u1", "carrying_key")]
    assert noise["excess_bits"] < 0.02 and noise["p_value"] > 0.05
    assert by[("u0", "constant")]["mi_bits"] == 0.0 and by[("u0", "constant")]["p_value"] == 1.0
    [agg, _] = aggregate_specialisation([rows, rows, []])
    assert agg["factor"] == "carrying_key" and agg["n_runs"] == 2 and agg["set_above_p95"] == 2
    assert agg["best_unit_excess_bits"] == pytest.approx(max(by[(u, "carrying_key")]["excess_bits"]
                                                             for u in ("u0", "u1", "u2")))  # fmt: skip


def test_environment_factors_read_the_level_state() -> None:
    doorkey = load_split("doorkey")
    env = make_condition_env(doorkey.condition("iid"), sequential=True, monitor=False)
    env.reset()
    factors = env_factors(env)
    assert list(factors) == list(FACTORS) and factors["carrying_key"] == 0 and factors["room"] == 0
    base = env.unwrapped
    base.carrying = Key("yellow")
    door = next(obj for obj in base.grid.grid if obj is not None and obj.type == "door")
    door.is_open = True
    after = env_factors(env)
    assert after["carrying_key"] == 1 and after["door_open"] == 1
    env.close()
    background = make_condition_env(doorkey.condition("iid_background"), sequential=True, monitor=False)
    background.reset()
    cells = perturbed_cells(background)
    assert cells and all(background.unwrapped.grid.get(x, y).type == "floor" for x, y in cells)
    base = background.unwrapped
    _, visible = base.gen_obs_grid()
    seen = any((c := base.relative_coords(x, y)) is not None and visible[c] for x, y in cells)
    assert env_factors(background)["perturbed_in_view"] == int(seen)
    background.close()
    multiroom = make_condition_env(load_split("multiroom").condition("iid"), sequential=True, monitor=False)
    multiroom.reset()
    assert env_factors(multiroom)["room"] == 0 and len(multiroom.unwrapped.rooms) > 1
    multiroom.close()


def test_the_seed_record_keeps_specialisation_and_cases(tmp_path: Path) -> None:
    rows = specialisation(np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=bool), {"door_open": np.array([1, 0, 1, 0])},
                          [2, 2], ["u0", "u1"], permutations=10)  # fmt: skip
    stats = {"condition": "iid", "switch_rate": 0.5, "mean_active": 1.0, "unit_frequency": [0.5, 0.5],
             "units": ["u0", "u1"], "mean_return": 0.5, "selection_case": "switching", "distinct_sets": 2,
             "usage_entropy": 1.0, "collapse": 0.0, "always_on": [], "never_on": [],
             "specialisation": rows}  # fmt: skip
    store = SeedStore("doorkey")
    store.add_selection("rim", [0, 1], [[stats], [stats]])
    assert SeedStore("doorkey").save(tmp_path / "empty")[-1].name == "selection.csv"  # no rows: no file
    store.save(tmp_path)
    back = SeedStore.load(tmp_path, "doorkey")
    assert len(back.specialisation) == 2 * len(rows) and float(back.specialisation[0]["mi_bits"]) == rows[0]["mi_bits"]
    [agg] = back.selection_stats(["rim"])["rim"].aggregate
    assert agg["cases"] == ["switching", "switching"] and agg["case_counts"] == {"switching": 2}
    assert agg["specialisation"][0]["factor"] == "door_open" and agg["specialisation"][0]["n_runs"] == 2


def test_the_case_of_older_rows_is_derived_only_where_their_columns_determine_it() -> None:
    reasons = "always active: u0, u1, u2; never active: u3; switch rate 0.0000 < 0.01"
    assert derived_case({"switch_rate": "0.0", "unit_frequency": "1 0 1 1"}) == "fixed"
    assert derived_case({"switch_rate": "0.0", "unit_frequency": "1 0.8 1 0.2"}) == "per-episode"
    assert derived_case({"switch_rate": "0.0", "unit_frequency": "1 0.995 1 0.005"}) == "fixed"
    assert derived_case({"switch_rate": "0.0", "unit_frequency": "", "collapse_reasons": reasons}) == "fixed"
    assert derived_case({"switch_rate": "0.002", "unit_frequency": "1 0 1 1"}) is None
    assert derived_case({"switch_rate": "0.0", "unit_frequency": "1 1 0.5 0.5 0 0"}) is None  # k = 3 of 6
    assert derived_case({"switch_rate": "0.3", "selection_case": "switching"}) == "switching"


def test_selection_curves_are_read_from_metrics_csv_and_thinned(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["frames", "sel/rollout/switch_rate", "train/loss"])
        writer.writeheader()
        writer.writerows(
            {"frames": 100 * i, "sel/rollout/switch_rate": i / 1000, "train/loss": 1} for i in range(1, 201)
        )
    curves = selection_curves(path)
    assert list(curves) == ["switch_rate"] and len(curves["switch_rate"]) == MAX_CURVE_POINTS
    assert curves["switch_rate"][100] == 0.001 and curves["switch_rate"][20000] == 0.2
    assert selection_curves(tmp_path / "missing.csv") == {}
