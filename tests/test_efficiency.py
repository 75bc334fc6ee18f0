"""Sample efficiency in compare's report: frames until the periodic iid evaluation reaches a return."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.analysis.compare.efficiency import efficiencies, efficiency_table, frames_to_threshold, p_faster
from agents.analysis.compare.runs import Run


def _run(seed: int, curve: dict[int, float], core: str = "rim") -> Run:
    config = {"seed": seed, "model": {"core": core}, "env": {"name": "empty"}}
    return Run(Path(f"/runs/{core}_{seed}"), config, {}, {"iid": curve} if curve else {})


def test_frames_to_threshold_is_the_first_evaluation_at_or_above_it() -> None:
    run = _run(0, {6144: 0.95, 2048: 0.2, 4096: 0.9, 8192: 0.1})  # unordered on purpose
    assert frames_to_threshold(run, 0.9) == (4096, 8192)
    assert frames_to_threshold(run, 0.96) == (None, 8192)
    assert frames_to_threshold(_run(0, {}), 0.9) == (None, None)


def test_median_counts_unreached_seeds_as_slowest() -> None:
    models = {
        "a": [_run(0, {1000: 0.95}), _run(1, {1000: 0.1, 2000: 0.92}), _run(2, {1000: 0.0, 2000: 0.5})],
        "b": [_run(0, {1000: 0.1, 2000: 0.3}), _run(1, {1000: 0.1, 2000: 0.3}), _run(2, {1000: 0.91})],
        "no curves": [_run(0, {})],
    }
    effs = {e.model: e for e in efficiencies(models, 0.9)}
    assert set(effs) == {"a", "b"}  # a model without periodic evaluations is left out
    assert effs["a"].frames == [1000, 2000, None] and effs["a"].reached == 2 and effs["a"].median == 2000
    assert effs["b"].reached == 1 and effs["b"].median is None  # its median seed never got there
    table = efficiency_table(list(effs.values()), 0.9, ["a", "b"], reps=200)
    assert "2: > 2,000" in table and "not reached" in table and "2/3" in table


def test_p_faster_orders_by_frames_and_ties_unreached_seeds() -> None:
    fast = efficiencies({"fast": [_run(s, {1000: 0.95}) for s in range(3)]}, 0.9)[0]
    slow = efficiencies({"slow": [_run(s, {1000: 0.5, 2000: 0.95}) for s in range(3)]}, 0.9)[0]
    never = efficiencies({"never": [_run(s, {1000: 0.5}) for s in range(3)]}, 0.9)[0]
    assert p_faster(fast, slow, reps=100) == (1.0, 1.0, 1.0)
    assert p_faster(slow, fast, reps=100) == (0.0, 0.0, 0.0)
    assert p_faster(never, never, reps=100) == (0.5, 0.5, 0.5)
    assert p_faster(slow, never, reps=100)[0] == 1.0
    point, low, high = p_faster(fast, efficiencies({"m": [_run(0, {1000: 0.95}), _run(1, {2000: 0.95})]}, 0.9)[0])
    assert point == pytest.approx(0.75) and 0.0 <= low <= point <= high <= 1.0
