"""The selection-freeze probes (agents/analysis/selection_causes.py): what each measures, on cases whose answer is
known, and the script's record."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from agents.analysis import selection_causes as sc

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("selection_causes_script", ROOT / "scripts" / "selection_causes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def policy():
    """An untrained doorkey RIM agent (4 units, k=3) and two short validation episodes it played."""
    found = _script().untrained(0, "doorkey", "rim", 1e-3)
    played = sc.play_features(found.model, found.split.evaluable["validation"], 2, max_steps=12)
    return found, played


def test_feature_drift_of_constant_and_alternating_features():
    constant = [torch.ones(5, 3) * torch.tensor([1.0, 2.0, 3.0])]
    drift = sc.feature_drift(constant)
    assert drift["consecutive_cosine"] == pytest.approx(1.0)
    assert drift["common_share"] == pytest.approx(1.0)
    alternating = [torch.tensor([[1.0, 0.0], [-1.0, 0.0]] * 3)]
    drift = sc.feature_drift(alternating)
    assert drift["consecutive_cosine"] == pytest.approx(-1.0)
    assert drift["common_share"] == pytest.approx(0.0)


def test_transforms_keep_lengths_and_what_they_promise():
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(4, 6, generator=generator) + 3.0, torch.randn(7, 6, generator=generator) + 3.0]
    stacked = torch.cat(features)
    for name in sc.TRANSFORMS:
        out = sc.transform(features, name, seed=1)
        assert [len(f) for f in out] == [4, 7]
    shuffled = torch.cat(sc.transform(features, "shuffled", seed=1))
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, stacked.tolist()))
    centred = torch.cat(sc.transform(features, "centred"))
    torch.testing.assert_close(centred.norm(dim=-1), stacked.norm(dim=-1))
    assert sc.feature_drift([centred])["common_share"] < 0.05 < sc.feature_drift(features)["common_share"]
    with pytest.raises(ValueError, match="transform must be one of"):
        sc.transform(features, "reversed")


def test_a_unit_that_never_wins_gets_no_gradient(policy):
    """The claim behind 'no gradient to losing units': push one unit's score far below the others on constant
    features; it is never active, and the policy's loss gives its query and dynamics exactly zero gradient."""
    found, played = policy
    module = sc.rim_module(found.model)
    cell = module.layers[0]
    x = played.features[0][:1]  # (1, F)
    constant = sc.PlayedEpisodes([x.repeat(len(f), 1) for f in played.features], played.actions, played.returns)
    key = (x @ cell.weight_key.detach().T)[0]  # the input's key relative to null, (K,)
    with torch.no_grad():
        cell.weight_query[1].zero_()
        cell.bias_query[1].copy_(-50.0 * key / key.norm())
    selection = sc.selection_under(module, constant.features)
    assert selection["unit_frequency"][1] == 0.0
    assert selection["switch_rate"] == 0.0
    rows = sc.gradient_by_unit(found.model, constant)
    assert rows[1]["frequency"] == 0.0
    assert rows[1]["query_grad"] == 0.0 and rows[1]["dynamics_grad"] == 0.0
    assert all(r["dynamics_grad"] > 0 for r in rows if r["frequency"] > 0)
    assert all(p.grad is None for p in found.model.policy.parameters())  # gradients cleared afterwards


def test_selection_under_counts_first_step_sets_and_margin(policy):
    found, played = policy
    selection = sc.selection_under(sc.rim_module(found.model), played.features)
    assert selection["first_step_sets"] == 1  # a zero initial state: the same first choice in every episode
    assert selection["margin"] >= 0.0
    assert len(selection["unit_frequency"]) == 4
    assert sum(selection["unit_frequency"]) == pytest.approx(3.0)


def _metrics(path: Path, switches: list[float | None]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time/total_timesteps", "sel/rollout/switch_rate"])
        for i, value in enumerate(switches):
            writer.writerow([1024 * (i + 1), "" if value is None else value])
    return path


def test_freeze_point(tmp_path):
    point = sc.freeze_point(_metrics(tmp_path / "a.csv", [0.3, 0.05, 0.0, 0.02, 0.004, None, 0.0, 0.001]))
    assert point["frames"] == 5 * 1024  # from the 0.004 on, every logged rate stays below 0.01
    assert point["first_switch"] == 0.3 and point["updates"] == 7
    never = sc.freeze_point(_metrics(tmp_path / "b.csv", [0.0, 0.2]))
    assert never["frames"] is None
    with pytest.raises(ValueError, match="switch_rate"):
        sc.freeze_point(_metrics(tmp_path / "c.csv", [None, None]))


def test_script_writes_the_record(tmp_path, policy):
    script = _script()
    assert script.main(["--untrained", "1", "--episodes", "1", "--out", str(tmp_path)]) == 0
    with (tmp_path / "probes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["transform"] for r in rows] == list(sc.TRANSFORMS)
    assert {r["policy"] for r in rows} == {"untrained/0"}
    assert "| 0.001 | 0 | actual | 1 |" in (tmp_path / "report.md").read_text()
    with pytest.raises(SystemExit) as error:
        script.main(["--out", str(tmp_path)])
    assert error.value.code == 2
