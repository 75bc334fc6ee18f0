"""The rule behind every verdict: whole-seed resampling, the permutation test, Holm, and its measured error rate."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics

from agents.analysis.compare import Run, compare_runs
from agents.analysis.compare.error_rates import (
    detection_rate,
    exact_split_false_verdict_rate,
    false_verdict_rate,
    permutation_rule,
    stratified_bootstrap_rule,
)
from agents.analysis.compare.seed_tests import (
    BETTER,
    SAME,
    WORSE,
    holm,
    min_p,
    permutation_p,
    pooled_improvement,
    seed_bootstrap_improvement,
    seed_bootstrap_iqm,
    split_improvements,
    split_p_values,
    verdict,
)
from agents.analysis.reproduce.protocol import load_protocol
from agents.analysis.reproduce.seed_store import SeedStore
from agents.analysis.reproduce.tables import RESULTS_DIR, ReproduceError
from agents.analysis.reproduce.verdict_check import write_verdicts

DOORKEY_POOLED = ["doorkey_6x6", "doorkey_7x7", "doorkey_8x8", "iid_background", "iid_distractors"]


def test_the_exact_test_of_separated_seeds_gives_its_smallest_p() -> None:
    x, y = np.arange(5.0) + 10, np.arange(5.0)
    assert pooled_improvement(x, y) == 1.0
    assert permutation_p(x, y) == pytest.approx(2 / math.comb(10, 5)) == pytest.approx(min_p(5, 5))
    assert permutation_p(y, x) == pytest.approx(2 / 252)
    assert permutation_p(x, x.copy()) == 1.0  # identical seeds: every split is as extreme


def test_the_exact_test_equals_a_brute_force_enumeration_with_ties() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 3, size=(4, 2)).astype(float), rng.integers(0, 3, size=(5, 2)).astype(float)
    both, observed = np.concatenate([x, y]), abs(pooled_improvement(x, y) - 0.5)
    import itertools

    extreme = [
        abs(pooled_improvement(both[list(c)], np.delete(both, list(c), axis=0)) - 0.5) >= observed - 1e-12
        for c in itertools.combinations(range(9), 4)
    ]
    assert permutation_p(x, y) == pytest.approx(np.mean(extreme))
    assert permutation_p(x, y, max_exact=10, draws=4000) == pytest.approx(np.mean(extreme), abs=0.03)  # random splits


def test_pooled_improvement_is_rliables_multi_task_probability() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 4)).round(1), rng.random((6, 4)).round(1)
    assert pooled_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))


def test_pooled_intervals_resample_whole_seeds() -> None:
    # Conditions that move together (one policy scores them all) carry no more information than one of them:
    # resampling whole seeds gives the one-condition interval, resampling conditions independently a narrower one.
    rng = np.random.default_rng(1)
    x, y = rng.random((5, 1)), rng.random((5, 1)) + 0.2
    wide_x, wide_y = np.repeat(x, 4, axis=1), np.repeat(y, 4, axis=1)
    assert seed_bootstrap_improvement(wide_x, wide_y, seed=5) == seed_bootstrap_improvement(x, y, seed=5)
    (iqm, low, high), mean = seed_bootstrap_iqm(wide_x, seed=5)
    assert low <= iqm <= high and mean == pytest.approx(seed_bootstrap_iqm(x, seed=5)[1])


def _run(seed: int, core: str, values: list[float]) -> Run:
    scores = {c: {"return": v, "success": v} for c, v in zip(["iid", "a", "b", "c"], values, strict=True)}
    return Run(Path(f"r{seed}"), {"seed": seed, "model": {"core": core}, "env": {"name": "s"}}, scores, {})


def test_compare_runs_pools_the_named_conditions_over_whole_seeds_with_a_p_value() -> None:
    rng = np.random.default_rng(2)
    models = {
        "lstm": [_run(s, "lstm", rng.random(4).tolist()) for s in range(5)],
        "rim": [_run(s, "rim", rng.random(4).tolist()) for s in range(5)],
    }
    comparison = compare_runs(models, reps=500, seed=0, pooled=["a", "b"])
    assert comparison.pooled == ["a", "b"]
    pooled = next(e for e in comparison.improvements if e.condition == "all_ood" and e.metric == "return")
    x = np.array([[r.scores[c]["return"] for c in ("a", "b")] for r in models["rim"]])
    y = np.array([[r.scores[c]["return"] for c in ("a", "b")] for r in models["lstm"]])
    assert (pooled.point, pooled.low, pooled.high) == pytest.approx(seed_bootstrap_improvement(x, y, 500, 0))
    assert pooled.p_value == pytest.approx(permutation_p(x, y))
    with pytest.raises(ValueError, match="must not include 'iid'"):
        compare_runs(models, reps=10, pooled=["iid", "a"])


def test_holm_and_the_verdict_rule() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.2]) == [0.2] and holm([0.6, 0.6]) == [1.0, 1.0]
    assert verdict(0.8, 0.01) == BETTER and verdict(0.2, 0.05) == WORSE
    assert verdict(0.8, 0.051) == SAME and verdict(0.5, 0.0) == SAME


def _doorkey_pool() -> np.ndarray:
    """Every model's committed doorkey seeds on the pooled OOD conditions: ``(seeds, conditions)``."""
    with (RESULTS_DIR / "doorkey" / "seeds.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    seeds = sorted({(r["model"], r["seed"]) for r in rows})
    value = {(r["model"], r["seed"], r["condition"]): float(r["return"]) for r in rows}
    return np.array([[value[(*s, c)] for c in DOORKEY_POOLED] for s in seeds])


@pytest.mark.parametrize(("seeds", "trials"), [(5, 600), (10, 80)])
def test_the_verdict_rule_keeps_its_false_verdict_rate_at_five_percent(seeds: int, trials: int) -> None:
    # The null: both models' seeds drawn whole from one pool of our doorkey seeds (their correlation across
    # conditions, their ties at 0). A small version of scripts/reproduce/verdicts; the rule in use must pass,
    # the stratified bootstrap it replaced must not.
    pool = _doorkey_pool()
    rate = false_verdict_rate(pool, seeds, trials, permutation_rule, seed=seeds)
    assert rate.rate <= 0.05 + 3 * max(rate.mcse, math.sqrt(0.05 * 0.95 / trials))
    if seeds == 5:
        old = false_verdict_rate(pool, seeds, 150, stratified_bootstrap_rule, seed=seeds)
        assert old.rate > 0.05 + 3 * math.sqrt(0.05 * 0.95 / 150)


def test_each_split_gets_the_p_value_the_permutation_test_gives_it() -> None:
    rng = np.random.default_rng(3)
    rows = np.round(rng.normal(size=(9, 3)), 1)  # rounding makes ties
    rows[:3] = 0.0
    p_values = split_p_values(split_improvements(rows, 4))
    for j, chosen in enumerate(itertools.combinations(range(9), 4)):
        rest = [i for i in range(9) if i not in chosen]
        assert p_values[j] == pytest.approx(permutation_p(rows[list(chosen)], rows[rest]), abs=1e-12)
    with pytest.raises(ValueError, match="at most 200000 splits"):
        split_improvements(np.zeros((24, 2)), 12)


@pytest.mark.parametrize(("seeds", "trials"), [(5, 300), (10, 4)])
def test_counting_every_split_gives_the_rate_given_the_seeds_and_it_is_at_most_the_level(
    seeds: int, trials: int
) -> None:
    pool = _doorkey_pool()
    exact = exact_split_false_verdict_rate(pool, seeds, trials, seed=seeds)
    assert 0.0 < exact.rate <= 0.05 and exact.mcse < 0.005
    if seeds == 5:  # the same rate as testing one split per draw, within Monte Carlo error
        sampled = false_verdict_rate(pool, seeds, 600, permutation_rule, seed=1)
        assert abs(sampled.rate - exact.rate) <= 3 * sampled.mcse + exact.mcse


def test_a_real_difference_is_detected_more_often_with_more_seeds() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(1.0, 1.0, (12, 2)), rng.normal(0.0, 1.0, (12, 2))
    few, many = detection_rate(x, y, 4, 60, seed=1), detection_rate(x, y, 12, 60, seed=1)
    assert few.rate < many.rate and many.rate > 0.5


def test_the_seed_record_round_trips_and_rebuilds_runs(tmp_path: Path) -> None:
    runs = [
        Run(tmp_path / f"run{s}", {"seed": s, "model": {"core": "rim"}, "env": {"name": "doorkey"},
            "agent": {"learning_rate": 1e-4}}, {"iid": {"return": 0.5 + s, "success": 1.0}},
            {"iid": {50000: 0.25, 100000: 0.5}}, {"switch_rate": {1024: 0.1 * s, 2048: 0.0}})
        for s in (0, 1)
    ]  # fmt: skip
    store = SeedStore("doorkey")
    store.add_runs("rim", runs)
    stats = [{"condition": "iid", "switch_rate": 0.2, "mean_active": 3.0, "unit_frequency": [1.0, 0.5, 0.5, 1.0],
              "units": ["u0", "u1", "u2", "u3"], "mean_return": 0.5}]  # fmt: skip
    store.add_selection("rim", [0, 1], [stats, stats])
    store.save(tmp_path)
    back = SeedStore.load(tmp_path, "doorkey")
    rebuilt = back.runs()["rim"]
    assert [r.seed for r in rebuilt] == [0, 1] and rebuilt[1].scores == runs[1].scores
    assert rebuilt[0].curves == runs[0].curves and rebuilt[0].config["agent"]["learning_rate"] == 1e-4
    assert rebuilt[1].selection == runs[1].selection == {"switch_rate": {1024: 0.1, 2048: 0.0}}
    assert back.holds("rim", runs[0]) and not back.holds("lstm", runs[0])
    back.training = []  # a record from before training.csv: its training rows are added to the held seed
    assert back.holds("rim", runs[0]) and not back.holds_training("rim", 0)
    assert back.add_training("rim", runs[0]) and back.holds_training("rim", 0) and not back.holds_training("rim", 1)
    [agg] = back.selection_stats(["rim"])["rim"].aggregate
    assert agg["n_runs"] == 2 and agg["sorted_frequency"] == [1.0, 1.0, 0.5, 0.5] and agg["collapsed_runs"] == 2


def test_every_split_table_declares_a_valid_primary_endpoint(tmp_path: Path) -> None:
    for table, split in (("doorkey", "doorkey"), ("empty", "empty"), ("multiroom", "multiroom"), ("knobs", "doorkey")):
        protocol = load_protocol(table, split)
        assert protocol.metric == "return" and protocol.baseline == "lstm" and "iid" not in protocol.pooled
    assert "doorkey_16x16" not in load_protocol("doorkey", "doorkey").pooled  # every model scores 0 there
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "protocol.yaml").write_text("primary: {metric: return, baseline: lstm, pooled: [iid, huge]}\n")
    with pytest.raises(
        ReproduceError, match=r"pooled must list at least two OOD conditions .* \(unknown: \['iid', 'huge'\]\)"
    ):
        load_protocol("bad", "doorkey", tmp_path)
    with pytest.raises(ReproduceError, match="no declared primary endpoint"):
        load_protocol("none", "doorkey", tmp_path)


def test_the_verdicts_table_is_written_from_the_committed_seeds(tmp_path: Path) -> None:
    files = write_verdicts(tmp_path, {"machine": {"cpu": "x", "cores": 2, "torch": "t", "python": "p"}, "commit": "",
                                      "dirty": False, "date": "d", "command": "c"},
                           tables=("doorkey",), trials={5: 40, 10: 8}, old_trials=20, power_trials=8,
                           split_trials={5: 20, 10: 2})  # fmt: skip
    assert [f.name for f in files] == ["summary.json", "report.md", "meta.json"]
    [table] = json.loads(files[0].read_text())["tables"]
    assert table["conditions"] == DOORKEY_POOLED and set(table["false_verdicts"]) == {"5", "10"}
    assert {r["suite_rule_exact_splits"]["trials"] for r in table["false_verdicts"].values()} == {20, 2}
    assert "exact over splits" in files[1].read_text()
    assert set(table["power"]) == {"rim", "rim_u6k4"} and "seeds for 80%" in files[1].read_text()
