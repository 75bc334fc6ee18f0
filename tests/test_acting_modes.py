"""Acting modes (agents/analysis/acting_modes.py, scripts/acting_modes.py): greedy or sampled actions, the selection
noise off or on, on an untrained doorkey agent; the report and the script's record."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from agents.analysis import acting_modes as am
from agents.experiment.atomic import write_csv
from agents.experiment.evaluation import run_episodes
from agents.experiment.run_folder import matching_folders, run_label

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def agents():
    """Untrained doorkey agents: the plain RIM and one with noisy top-k (std 3)."""
    untrained = _script("selection_causes").untrained
    return {name: untrained(0, "doorkey", name, 1e-3) for name in ("rim", "rim_noise_s3")}


def test_the_noisy_modes_are_played_only_by_a_core_with_selection_noise(agents):
    assert am.noise_scale(agents["rim"].model) == 0.0 and am.noise_scale(agents["rim_noise_s3"].model) == 3.0
    assert am.modes_for(agents["rim"].model) == [("greedy", "plain"), ("sampled", "plain")]
    assert am.modes_for(agents["rim_noise_s3"].model) == list(am.MODES) and len(am.MODES) == 4


def test_the_greedy_plain_mode_is_the_tables_evaluation_and_every_mode_repeats(agents):
    found = agents["rim_noise_s3"]
    condition = found.split.condition("validation")
    rows = am.play_modes(found.model, condition, 3, n_envs=3)
    assert [(r["actions"], r["selection"]) for r in rows] == list(am.MODES)
    assert all(r["episodes"] == 3 and 0.0 <= r["min_frequency"] <= r["max_frequency"] <= 1.0 for r in rows)
    tables = run_episodes(found.model, condition, 3, deterministic=True, n_envs=3)
    assert rows[0]["mean_return"] == pytest.approx(np.mean(tables.returns))
    assert rows[0]["switch_rate"] == pytest.approx(tables.selection["switch_rate"])
    assert am.play_modes(found.model, condition, 3, n_envs=3) == rows  # seeded: sampled actions and noise repeat
    assert not found.model.policy.training  # acting leaves the policy in evaluation mode


def _rows() -> list[dict]:
    base = {"model": "rim_noise_s3", "condition": "validation", "episodes": 10, "min_frequency": 0.1,
            "max_frequency": 0.9}  # fmt: skip
    cells = [("greedy", "plain", 0.0, 0.002), ("sampled", "plain", 1.0, 0.15), ("greedy", "noisy", 0.4, 0.02),
             ("sampled", "noisy", 1.0, 0.2)]  # fmt: skip
    rows = []
    for seed, scale in ((0, 1.0), (1, 0.0)):
        rows += [{**base, "run": f"r{seed}", "seed": seed, "actions": a, "selection": s, "mean_return": v * scale,
                  "mean_success": v * scale, "switch_rate": w} for a, s, v, w in cells]  # fmt: skip
    return rows


def test_the_report_counts_seeds_that_solve_the_levels_greedily_and_as_the_rollouts_act() -> None:
    rows = _rows()
    assert am.training_mode(rows, "r0")["selection"] == "noisy"
    [line] = am.summary_lines(rows)
    assert "in 0, as the training rollouts act in 1" in line and "0.002 greedy, 0.200 as the rollouts act" in line
    assert "mean success 0.000 greedy, 0.500 as the rollouts act" in line
    text = am.render_report(rows, "python scripts/acting_modes.py --runs x", "validation", 10)
    assert "first 10 levels of `validation`" in text and text.count("| `rim_noise_s3` |") == 8


def test_the_script_keeps_its_record_and_refuses_to_mix_settings(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()  # a folder without model.zip: skipped
    write_csv(tmp_path / "out" / "acting_modes.csv", _rows(), am.FIELDS)
    script = _script("acting_modes")
    assert len(script._read(tmp_path / "out" / "acting_modes.csv")) == 8
    with pytest.raises(SystemExit) as error:
        script.main(["--runs", str(tmp_path / "run"), "--episodes", "20", "--out", str(tmp_path / "out")])
    assert error.value.code == 2
    assert script.main(["--runs", str(tmp_path / "run"), "--episodes", "10", "--out", str(tmp_path / "out")]) == 0
    with pytest.raises(SystemExit):
        script.main(["--runs", str(tmp_path / "none*"), "--out", str(tmp_path / "out")])


def test_run_folders_are_found_by_glob_and_named_from_multirun_on(tmp_path: Path) -> None:
    for name in ("b_run", "a_run"):
        (tmp_path / "multirun" / "t" / name).mkdir(parents=True)
    (tmp_path / "multirun" / "t" / "a_file").write_text("")
    pattern = str(tmp_path / "multirun" / "t" / "*")
    found = matching_folders([pattern, pattern])
    assert [f.name for f in found] == ["a_run", "b_run"]  # sorted, each once, folders only
    assert run_label(found[0]) == "multirun/t/a_run" and run_label(tmp_path) == str(tmp_path)
