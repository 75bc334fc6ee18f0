"""``agents.analysis.compare`` and ``rims-compare`` on small synthetic run folders (no training)."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
import yaml
from rliable import metrics

from agents.analysis.compare import (
    ALL_OOD,
    Comparison,
    Estimate,
    Run,
    _iqm_columns,
    _probability_of_improvement,
    compare,
    compare_runs,
    group_runs,
    label_runs,
    load_runs,
)
from agents.cli.compare import main

REPO = Path(__file__).resolve().parents[1]
REPS = 200
CONDITIONS = ("iid", "empty_8x8", "empty_16x16")
# Final returns per model and seed: rim beats every lstm seed on empty_16x16, ties on empty_8x8.
RETURNS = {
    "lstm": {"iid": [0.90, 0.92, 0.94], "empty_8x8": [0.5, 0.5, 0.5], "empty_16x16": [0.10, 0.20, 0.15]},
    "rim": {"iid": [0.91, 0.80, 0.95, 0.99], "empty_8x8": [0.5, 0.5, 0.5, 0.5], "empty_16x16": [0.6, 0.7, 0.9, 0.8]},
}


def _row(condition: str, value: float, **extra: Any) -> dict[str, Any]:
    """An eval.json / ood_curves.json row with return ``value`` and success ``value > 0.5``."""
    success = float(value > 0.5)
    return {
        **extra,
        "condition": condition,
        "episodes": 10,
        "mean_return": value,
        "return_ci_low": value,
        "return_ci_high": value,
        "mean_success": success,
        "success_ci_low": success,
        "success_ci_high": success,
        "mean_length": 20.0,
        "length_ci_low": 20.0,
        "length_ci_high": 20.0,
    }


def make_run(
    folder: Path,
    core: str,
    seed: int,
    scores: dict[str, float],
    *,
    split: str = "empty",
    agent: str = "ppo",
    units: int = 4,
    k: int = 3,
    finished: bool = True,
    logger: dict[str, Any] | None = None,
) -> Path:
    """Write a run folder like ``agents.experiment.run.train`` does: config.yaml, eval.json, ood_curves.json."""
    folder.mkdir(parents=True)
    model: dict[str, Any] = {"core": core, "hidden_size": 96}
    if core.startswith("rim"):
        model |= {"num_units": units, "k": k}
    config: dict[str, Any] = {
        "model": model,
        "agent": {"name": agent, "learning_rate": 0.0007},
        "env": {"name": split, "train": {"env_id": "MiniGrid-Empty-5x5-v0"}},
        "seed": seed,
        "total_frames": 1000,
        "eval": {"every_frames": 500, "episodes": 10 + seed, "final_episodes": 10},
    }
    if logger is not None:
        config["logger"] = logger
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if not finished:
        return folder
    rows = [_row(c, v, split=split, mode="deterministic") for c, v in scores.items()]
    (folder / "eval.json").write_text(json.dumps(rows))
    curves = [_row(c, v * f / 1000, frames=f) for f in (500, 1000) for c, v in scores.items()]
    (folder / "ood_curves.json").write_text(json.dumps(curves))
    return folder


def make_sweep(root: Path, models: dict[str, dict[str, list[float]]] = RETURNS, **kwargs: Any) -> Path:
    """A Hydra-like sweep folder ``root/multirun/<date>/<time>/<n>_ppo_<core>_empty_s<seed>`` per model x seed."""
    sweep = root / "multirun" / "2026-11-28" / "12-00-00"
    num = 0
    for core, per_condition in models.items():
        for seed in range(len(next(iter(per_condition.values())))):
            scores = {c: values[seed] for c, values in per_condition.items()}
            make_run(sweep / f"{num}_ppo_{core}_empty_s{seed}", core, seed, scores, **kwargs)
            num += 1
    return sweep


def find(estimates: list[Estimate], **match: Any) -> Estimate:
    """The single estimate with the given field values."""
    found = [e for e in estimates if all(getattr(e, key) == value for key, value in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Comparison, Path]:
    """The comparison of the default sweep, with its report folder."""
    root = tmp_path_factory.mktemp("runs")
    make_sweep(root)
    comparison, files = compare([root], out_dir=root / "report", reps=REPS)
    return comparison, files.out_dir


def test_labels_are_core_names_plus_differing_settings(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path / "a", "lstm", 0, {"iid": 1.0}, agent="a2c"),
        make_run(tmp_path / "b", "lstm", 0, {"iid": 1.0}),
        make_run(tmp_path / "c", "rim", 0, {"iid": 1.0}, units=6, k=4),
        make_run(tmp_path / "d", "rim", 1, {"iid": 1.0}, units=6, k=4),
        make_run(tmp_path / "e", "rim", 0, {"iid": 1.0}, units=4, k=2),
    ]
    models = group_runs(load_runs([tmp_path]))
    assert list(models) == ["lstm a2c", "lstm ppo", "rim u4 k2 ppo", "rim u6 k4 ppo"]
    assert [run.path for run in models["rim u6 k4 ppo"]] == [runs[2], runs[3]]


def test_labels_are_preset_names_plus_overrides_on_top() -> None:
    """``model=rim_sw``, ``model=brims``, ``model=scoff`` are named by their preset, not by their settings."""

    def run(seed: int, name: str | None, **model: Any) -> Run:
        config = {"seed": seed, "model": {"core": "rim", "name": name, "num_units": 4, "k": 3, **model}}
        config |= {"agent": {"name": "ppo"}, "env": {"name": "empty"}}
        return Run(Path(f"/runs/{name}_{seed}_{sorted(model.items())}"), config, {}, {})

    runs = [
        run(0, "rim"),
        run(0, "rim_sw", communication="workspace", num_slots=4, write_k=2),
        run(0, "brims", num_layers=2, top_down=True),
        run(0, "scoff", num_schemata=2),
        run(0, "rim_sw", communication="workspace", num_slots=4, write_k=1),  # an override on top of the preset
        run(0, "rim_u6k4", num_units=6, k=4, hidden_size=126),
        run(1, None, num_units=6, k=4),  # saved before model.name existed: named by its core
    ]
    assert label_runs(runs) == [
        "rim u4 k3", "rim_sw write_k=2", "brims", "scoff", "rim_sw write_k=1", "rim_u6k4", "rim u6 k4",
    ]  # fmt: skip


def test_a_null_option_group_set_in_other_runs_tells_them_apart() -> None:
    """``model=meta_rim`` runs differ from plain ``rim`` runs only by ``agent.fast_slow`` (null vs set)."""

    def run(seed: int, fast_slow: dict | None, core: str = "rim") -> Run:
        agent = {"name": "ppo", "learning_rate": 3e-4, "fast_slow": fast_slow}
        config = {"seed": seed, "model": {"core": core}, "agent": agent, "env": {"name": "empty"}}
        return Run(Path(f"/runs/{core}_{seed}_{fast_slow is None}"), config, {}, {})

    meta = {"outer_horizon": 4, "inner_learning_rate": None}
    runs = [run(0, None), run(1, None), run(0, meta), run(1, meta), run(0, None, "lstm")]
    assert label_runs(runs) == ["rim", "rim", "rim fast_slow.outer_horizon=4", "rim fast_slow.outer_horizon=4", "lstm"]


def test_plain_labels_when_only_the_seed_and_eval_budget_differ(compared: tuple[Comparison, Path]) -> None:
    comparison, _ = compared
    assert list(comparison.models) == ["lstm", "rim"]
    assert [run.seed for run in comparison.models["rim"]] == [0, 1, 2, 3]
    assert comparison.split == "empty"
    assert comparison.conditions == [*CONDITIONS, ALL_OOD]


@pytest.mark.parametrize("metric", ["return", "success"])
def test_iqm_and_mean_match_numpy(compared: tuple[Comparison, Path], metric: str) -> None:
    comparison, _ = compared
    for model, per_condition in RETURNS.items():
        for condition, values in per_condition.items():
            scores = np.array(values) if metric == "return" else (np.array(values) > 0.5).astype(float)
            iqm = find(comparison.estimates, model=model, condition=condition, metric=metric, aggregate="iqm")
            mean = find(comparison.estimates, model=model, condition=condition, metric=metric, aggregate="mean")
            assert iqm.point == pytest.approx(scipy.stats.trim_mean(scores, 0.25))
            assert mean.point == pytest.approx(scores.mean())
            assert iqm.n_seeds == mean.n_seeds == len(values)
            for estimate in (iqm, mean):
                assert estimate.low - 1e-12 <= estimate.point <= estimate.high + 1e-12


def test_iqm_trims_the_extremes_with_four_seeds(compared: tuple[Comparison, Path]) -> None:
    comparison, _ = compared
    iqm = find(comparison.estimates, model="rim", condition="iid", metric="return", aggregate="iqm")
    assert iqm.point == pytest.approx((0.91 + 0.95) / 2)


def test_all_ood_aggregates_every_condition_but_iid(compared: tuple[Comparison, Path]) -> None:
    comparison, _ = compared
    ood = np.array([RETURNS["rim"]["empty_8x8"], RETURNS["rim"]["empty_16x16"]]).T
    estimate = find(comparison.estimates, model="rim", condition=ALL_OOD, metric="return", aggregate="iqm")
    assert estimate.point == pytest.approx(metrics.aggregate_iqm(ood))


def test_probability_of_improvement(compared: tuple[Comparison, Path]) -> None:
    comparison, _ = compared
    better = find(comparison.improvements, model="rim", baseline="lstm", condition="empty_16x16", metric="return")
    assert (better.point, better.low, better.high) == (1.0, 1.0, 1.0)
    assert (better.n_seeds, better.baseline_seeds) == (4, 3)
    tie = find(comparison.improvements, model="rim", baseline="lstm", condition="empty_8x8", metric="return")
    assert tie.point == 0.5
    for estimate in comparison.improvements:
        assert estimate.low - 1e-12 <= estimate.point <= estimate.high + 1e-12


def test_fast_probability_of_improvement_equals_rliable() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, size=(5, 3)) / 4, rng.integers(0, 4, size=(3, 3)) / 4
        expected = [metrics.probability_of_improvement(x[:, [j]], y[:, [j]]) for j in range(3)]
        np.testing.assert_allclose(_probability_of_improvement(x, y), expected)


def test_fast_iqm_equals_scipy_trim_mean() -> None:
    rng = np.random.default_rng(0)
    for n in range(1, 10):
        scores = rng.random((n, 3))
        np.testing.assert_allclose(_iqm_columns(scores), scipy.stats.trim_mean(scores, 0.25, axis=0))


def test_learning_curves_average_seeds_over_common_frames(compared: tuple[Comparison, Path]) -> None:
    comparison, _ = compared
    curve = next(c for c in comparison.curves if c.model == "lstm" and c.condition == "empty_16x16")
    assert curve.frames == [500, 1000]
    np.testing.assert_allclose(curve.mean, [0.075, 0.15])
    assert all(lo <= m <= hi for lo, m, hi in zip(curve.low, curve.mean, curve.high, strict=True))


def test_report_files(compared: tuple[Comparison, Path]) -> None:
    comparison, out = compared
    for name in ("report.md", "summary.csv", "summary.json", "learning_curves.png", "ood_bars.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "report.md").read_text()
    for text in (*CONDITIONS, "all OOD", "lstm", "rim", "P(improvement)", "learning_curves.png", "ood_bars.png"):
        assert text in report
    with (out / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(comparison.estimates) + len(comparison.improvements)
    assert json.loads((out / "summary.json").read_text())[0].keys() == rows[0].keys()
    assert not list(out.glob("*.tmp"))


def test_results_are_deterministic(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    models = group_runs(load_runs([sweep]))
    first, second = compare_runs(models, reps=50, seed=3), compare_runs(models, reps=50, seed=3)
    assert first.estimates == second.estimates
    assert first.improvements == second.improvements


def test_no_baseline_skips_improvement_with_a_note(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, {"rim": RETURNS["rim"]})
    comparison, files = compare([sweep], reps=50)
    assert comparison.improvements == []
    assert files.out_dir == (sweep / "compare").resolve()
    assert "No LSTM baseline" in files.report.read_text()


def test_discovery_through_nested_folders_skips_unfinished_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sweep = make_sweep(tmp_path)
    unfinished = make_run(sweep / "deeper" / "9_ppo_rim_empty_s9", "rim", 9, {}, finished=False)
    (sweep / "wandb" / "offline-run-x" / "files").mkdir(parents=True)
    (sweep / "wandb" / "offline-run-x" / "files" / "config.yaml").write_text("a: 1\n")
    with caplog.at_level(logging.WARNING, logger="agents.analysis.compare"):
        runs = load_runs([tmp_path / "multirun"])
    assert len(runs) == 7
    assert str(unfinished) in caplog.text and "unfinished" in caplog.text


def test_mixed_splits_are_an_error(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "lstm", 0, {"iid": 1.0})
    make_run(tmp_path / "b", "rim", 0, {"iid": 1.0}, split="doorkey")
    with pytest.raises(ValueError, match="mix splits"):
        load_runs([tmp_path])


def test_duplicate_seeds_are_an_error(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "rim", 0, {"iid": 1.0})
    make_run(tmp_path / "b", "rim", 0, {"iid": 0.5})
    with pytest.raises(ValueError, match="seed 0"):
        group_runs(load_runs([tmp_path]))


def test_nothing_found_is_an_error(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "rim", 0, {}, finished=False)
    with pytest.raises(ValueError, match="no finished runs"):
        load_runs([tmp_path])


def test_cli_error_on_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no finished runs")


def test_cli_prints_tables_and_report_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tmp_path)
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--reps", "50", "--wandb", "none"]) == 0
    printed = capsys.readouterr().out
    assert "| rim | IQM |" in printed and "P(improvement)" in printed
    assert f"report: {out.resolve() / 'report.md'}" in printed
    assert not (out / "wandb").exists()


def test_cli_auto_logs_nothing_when_runs_had_no_logger(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, logger={"name": "none"})
    assert main([str(sweep), "--reps", "20"]) == 0
    assert not (sweep / "compare" / "wandb").exists()


def test_script_exit_code(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare.py"), str(sweep), "--reps", "20", "--wandb", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (sweep / "compare" / "report.md").is_file()


def test_offline_wandb_logs_the_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("agents.experiment.wandb_logger")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    logger = {"name": "wandb", "mode": "offline", "project": "rims", "entity": None, "group": "sweep-1"}
    sweep = make_sweep(tmp_path, logger=logger)
    assert main([str(sweep), "--reps", "20"]) == 0
    media = list((sweep / "compare" / "wandb").glob("offline-run-*/files/media/**/*"))
    names = {path.name.split("_")[0] for path in media if path.is_file()}
    assert {"summary", "learning", "ood"} <= names


def test_missing_curves_and_conditions_are_noted(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "lstm", 0, {"iid": 0.5, "empty_8x8": 0.1})
    make_run(tmp_path / "b", "lstm", 1, {"iid": 0.7})
    make_run(tmp_path / "c", "rim", 0, {"iid": 0.9, "empty_8x8": 0.4})
    (tmp_path / "c" / "ood_curves.json").unlink()
    comparison = compare_runs(group_runs(load_runs([tmp_path])), reps=20)
    assert {e.condition for e in comparison.estimates if e.model == "lstm"} == {"iid"}
    assert comparison.conditions == ["iid", "empty_8x8"]
    assert not any(curve.model == "rim" for curve in comparison.curves)
    notes = " ".join(comparison.notes)
    assert "`lstm` lacks conditions empty_8x8" in notes and "`rim` has no learning curve" in notes
