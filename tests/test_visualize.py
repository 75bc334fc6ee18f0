"""Episode recording (frames, actions, active RIM units) and the visualize tool on a tiny trained run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from agents import RecurrentPPO
from agents.analysis.activations import collapse_reasons, play_activations
from agents.analysis.modularity import aggregate_stats
from agents.analysis.visualize import activation_stats, summarize_activations, visualize_run
from agents.cli.visualize import main
from agents.experiment.recording import Recording, record_episode, save_gif
from agents.experiment.run import build_model, train, validate
from agents.experiment.run_folder import load_run
from envs.levels import make_condition_env, make_condition_vec_env
from envs.splits import Condition, load_split

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = [
    "env=empty", "total_frames=64", "n_envs=2", "eval.every_frames=100000", "eval.episodes=1",
    "eval.final_episodes=1", "agent.n_steps=16", "agent.batch_size=32", "model.hidden_size=16",
]  # fmt: skip
OPTIONAL = {"logger": "logger=none", "eval.gifs": "eval.gifs=false", "progress_bar": "progress_bar=false"}
K = 2
STEPS = 12  # max_steps of recorded episodes: keeps GIFs short


def _compose(overrides: list[str]) -> DictConfig:
    """The train config with ``overrides``, switching off logging/media where the tree has them."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
        extra = [o for key, o in OPTIONAL.items() if OmegaConf.select(cfg, key) is not None]
        return compose(config_name="train", overrides=[*overrides, *extra]) if extra else cfg


def _untrained(overrides: list[str]) -> tuple[RecurrentPPO, DictConfig]:
    cfg = _compose([*overrides, *TINY])
    env = make_condition_vec_env(validate(cfg).train, 2)
    model = build_model(cfg, env)
    env.close()
    return model, cfg


@pytest.fixture(scope="module")
def rim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("visualize") / "rim_run"
    torch.manual_seed(0)
    train(_compose(["model=rim", f"model.k={K}", *TINY]), run)
    return run


@pytest.fixture(scope="module")
def rim_model(rim_run: Path) -> RecurrentPPO:
    return load_run(rim_run)[0]


@pytest.fixture(scope="module")
def iid() -> Condition:
    return load_split("empty").test["iid"]


def _predict_actions(
    model: RecurrentPPO, condition: Condition, episode: int, steps: int, deterministic: bool
) -> list[int]:
    env = make_condition_env(condition, sequential=True, first=episode, monitor=False)
    obs, _ = env.reset()
    state, start, actions = None, np.ones(1, dtype=bool), []
    for _ in range(steps):
        action, state = model.predict(obs[None], state=state, episode_start=start, deterministic=deterministic)
        obs, _, terminated, truncated, _ = env.step(int(action[0]))
        actions.append(int(action[0]))
        start = np.zeros(1, dtype=bool)
        if terminated or truncated:
            break
    env.close()
    return actions


@pytest.mark.parametrize("core", ["rim", "lstm", "rim_gru"])
@pytest.mark.parametrize("deterministic", [True, False])
def test_recorded_actions_equal_a_predict_loop(
    core: str, deterministic: bool, rim_model: RecurrentPPO, iid: Condition
) -> None:
    model = rim_model if core == "rim" else _untrained([f"model={core}"])[0]
    torch.manual_seed(1)
    recording = record_episode(model, iid, episode=1, deterministic=deterministic, max_steps=30, render=False)
    torch.manual_seed(1)
    expected = _predict_actions(model, iid, 1, 30, deterministic)
    assert recording.actions.tolist() == expected
    assert recording.level_seed == iid.seeds.start + 1


def test_recording_has_one_frame_more_than_steps(rim_model: RecurrentPPO, iid: Condition) -> None:
    recording = record_episode(rim_model, iid, max_steps=STEPS)
    assert recording.length == len(recording.rewards) == STEPS
    assert len(recording.frames) == recording.length + 1
    assert {f.shape for f in recording.frames} == {recording.frames[0].shape}
    assert recording.frames[0].ndim == 3 and recording.frames[0].shape[2] == 3
    assert all(f.dtype == np.uint8 for f in recording.frames)
    assert recording.total_return == pytest.approx(float(recording.rewards.sum()))


def test_rim_active_mask_has_k_units_per_step(rim_model: RecurrentPPO, iid: Condition) -> None:
    recording = record_episode(rim_model, iid, max_steps=STEPS, render=False)
    assert recording.active is not None and recording.active_layers is not None
    assert recording.active.shape == (STEPS, 4) and recording.active.dtype == bool
    assert recording.active_layers.shape == (STEPS, 1, 4)
    assert (recording.active.sum(axis=1) == K).all()


def test_lstm_core_records_no_active_mask(iid: Condition) -> None:
    model, _ = _untrained(["model=lstm"])
    recording = record_episode(model, iid, max_steps=5, render=False)
    assert recording.active is None and recording.active_layers is None and recording.frames == []


def test_two_layer_rim_keeps_every_layer(iid: Condition) -> None:
    env = make_condition_vec_env(load_split("empty").train, 1)
    kwargs = dict(core="rim", core_kwargs=dict(hidden_size=16, num_units=4, k=K, num_layers=2))
    model = RecurrentPPO("RecurrentPolicy", env, policy_kwargs=kwargs, n_steps=16)
    env.close()
    recordings = [record_episode(model, iid, i, max_steps=6, render=False) for i in range(2)]
    assert recordings[0].active_layers.shape == (6, 2, 4)
    assert (recordings[0].active_layers.sum(axis=2) == K).all()
    np.testing.assert_array_equal(recordings[0].active, recordings[0].active_layers[:, 0])
    stats = summarize_activations(recordings)
    assert stats["mean_active"] == pytest.approx(K) and sum(stats["unit_frequency"]) == pytest.approx(2 * K)
    assert stats["units"][:2] == ["l0u0", "l0u1"] and len(stats["units"]) == 8


def test_activation_stats_mean_active_is_k(rim_model: RecurrentPPO, iid: Condition) -> None:
    stats = activation_stats(rim_model, iid, episodes=2, max_steps=STEPS)
    assert stats["episodes"] == 2 and stats["steps"] == 2 * STEPS
    assert stats["mean_active"] == pytest.approx(K)
    assert sum(stats["unit_frequency"]) == pytest.approx(K)
    assert 0.0 <= stats["switch_rate"] <= 1.0


def test_switch_rate_counts_changed_flags() -> None:
    active = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0]], dtype=bool)  # 2 of 4 flip, then none
    recording = Recording("c", 0, [], np.zeros(3, dtype=np.int64), np.array([0.0, 0.0, 0.5]), active)
    stats = summarize_activations([recording])
    assert stats["switch_rate"] == pytest.approx(2 / 8)
    assert stats["unit_frequency"] == pytest.approx([1.0, 1 / 3, 2 / 3, 0.0])
    assert stats["mean_return"] == 0.5 and stats["mean_success"] == 1.0


def test_activation_stats_refuses_a_non_rim_core(iid: Condition) -> None:
    with pytest.raises(ValueError, match="needs a RIM core"):
        activation_stats(_untrained(["model=gru"])[0], iid, episodes=1)


def test_visualize_run_writes_every_output(
    rim_run: Path, rim_model: RecurrentPPO, iid: Condition, tmp_path: Path
) -> None:
    out = tmp_path / "vis"
    result = visualize_run(rim_run, out, conditions=["iid", "iid_background"], episodes=2, max_steps=STEPS)
    expected = [
        "iid.gif", "iid_heatmap.png", "iid_background.gif", "iid_background_heatmap.png",
        "activation_stats.json", "activation_stats.csv", "activation_stats.md", "activation_frequency.png",
    ]  # fmt: skip
    assert sorted(p.name for p in result["files"]) == sorted(expected)
    assert all((out / name).is_file() for name in expected)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    length = record_episode(rim_model, iid, max_steps=STEPS, render=False).length
    with Image.open(out / "iid.gif") as gif:
        assert gif.n_frames == length + 1
    stats = json.loads((out / "activation_stats.json").read_text())
    assert [s["condition"] for s in stats] == ["iid", "iid_background"]
    assert all(s["mean_active"] == pytest.approx(K) for s in stats)
    with (out / "activation_stats.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["condition"] for r in rows] == ["iid", "iid_background"]
    assert {"freq_u0", "freq_u3", "switch_rate", "mean_return"} <= set(rows[0])
    assert "| iid_background |" in (out / "activation_stats.md").read_text()


def test_visualize_run_errors(rim_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no condition\(s\) \['nope'\]; valid: \['iid', 'empty_6x6'"):
        visualize_run(rim_run, tmp_path / "x", conditions=["nope"])
    with pytest.raises(ValueError, match=r"lacks model\.zip"):
        (tmp_path / "half").mkdir()
        OmegaConf.save(OmegaConf.load(rim_run / "config.yaml"), tmp_path / "half" / "config.yaml")
        visualize_run(tmp_path / "half")
    model, cfg = _untrained(["model=lstm"])
    lstm_run = tmp_path / "lstm_run"
    lstm_run.mkdir()
    OmegaConf.save(cfg, lstm_run / "config.yaml", resolve=True)
    model.save(lstm_run / "model.zip")
    with pytest.raises(ValueError, match=r"core 'lstm'; visualize needs a RIM core"):
        visualize_run(lstm_run)
    assert not (lstm_run / "visualize").exists()


def test_save_gif_is_atomic_and_checks_shapes(tmp_path: Path) -> None:
    frames = [np.full((8, 10, 3), i * 40, dtype=np.uint8) for i in range(4)]
    path = save_gif(frames, tmp_path / "sub" / "a.gif", fps=5)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (10, 8)
    with pytest.raises(ValueError, match="same shape"):
        save_gif([frames[0], np.zeros((9, 10, 3), dtype=np.uint8)], tmp_path / "b.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_cli_exit_codes(rim_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(rim_run), "--conditions", "iid", "--episodes", "1", "--max-steps", "4", "--fps", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert str(rim_run / "visualize") in out and "| iid |" in out
    assert (rim_run / "visualize" / "iid.gif").is_file()
    assert main([str(tmp_path / "missing")]) == 2
    assert "error: no such run folder" in capsys.readouterr().err


@pytest.mark.parametrize("n_envs", [1, 3])
def test_play_activations_plays_the_recorded_episodes(rim_model: RecurrentPPO, iid: Condition, n_envs: int) -> None:
    played = play_activations(rim_model, iid, episodes=4, max_steps=STEPS, n_envs=n_envs)
    assert [r.level_seed for r in played] == [iid.seeds.start + i for i in range(4)]
    for i, recording in enumerate(played):
        expected = record_episode(rim_model, iid, i, max_steps=STEPS, render=False)
        assert recording.frames == []
        np.testing.assert_array_equal(recording.actions, expected.actions)
        np.testing.assert_array_equal(recording.rewards, expected.rewards)
        np.testing.assert_array_equal(recording.active_layers, expected.active_layers)


def test_collapse_reasons_and_aggregate_over_seeds() -> None:
    healthy = {"condition": "iid", "units": ["u0", "u1", "u2"], "unit_frequency": [0.6, 0.9, 0.5],
               "switch_rate": 0.2, "mean_active": 2.0, "mean_return": 0.5}  # fmt: skip
    fixed = {**healthy, "unit_frequency": [1.0, 1.0, 0.0], "switch_rate": 0.0, "mean_return": 0.1}
    assert collapse_reasons(healthy) == []
    assert collapse_reasons(fixed) == ["always active: u0, u1", "never active: u2", "switch rate 0.0000 < 0.01"]
    (agg,) = aggregate_stats([[healthy], [fixed]])
    assert agg["n_runs"] == 2 and agg["collapsed_runs"] == 1
    assert agg["unit_frequency"] == pytest.approx([0.8, 0.95, 0.25])
    assert agg["sorted_frequency"] == pytest.approx([0.95, 0.8, 0.25])  # ranks: (0.9, 0.6, 0.5) and (1, 1, 0)
    assert agg["switch_rate"] == pytest.approx(0.1) and agg["switch_rates"] == [0.2, 0.0]


def test_stats_only_cli_aggregates_a_sweep_and_reads_back(
    rim_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for seed in (0, 1):
        run = sweep / f"{seed}_rim"
        torch.manual_seed(seed)
        train(_compose(["model=rim", f"model.k={K}", f"seed={seed}", *TINY]), run)
    lstm_run = sweep / "2_lstm"
    train(_compose(["model=lstm", *TINY]), lstm_run)  # skipped: not a RIM core
    args = [
        str(sweep),
        "--stats-only",
        "--episodes",
        "2",
        "--max-steps",
        str(STEPS),
        "--conditions",
        "iid",
        "empty_6x6",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 RIM runs, models rim" in out and "| rim | empty_6x6 | 2 |" in out
    summary = json.loads((sweep / "activation_summary.json").read_text())
    assert list(summary) == ["rim"] and summary["rim"]["seeds"] == [0, 1]
    iid_agg = summary["rim"]["aggregate"][0]
    assert iid_agg["condition"] == "iid" and iid_agg["n_runs"] == 2 and iid_agg["mean_active"] == pytest.approx(K)
    assert not (lstm_run / "visualize").exists()
    per_run = sweep / "0_rim" / "visualize" / "activation_stats.json"
    assert [s["condition"] for s in json.loads(per_run.read_text())] == ["iid", "empty_6x6"]
    assert not list((sweep / "0_rim" / "visualize").glob("*.gif"))
    stamp = per_run.stat().st_mtime_ns
    assert main(args) == 0  # read back, not recomputed
    assert per_run.stat().st_mtime_ns == stamp
    assert main([*args, "--force"]) == 0
    assert per_run.stat().st_mtime_ns != stamp
    assert main([str(tmp_path / "nothing_here"), "--stats-only"]) == 2
    assert main([str(rim_run), str(rim_run)]) == 2  # several paths need --stats-only


@pytest.mark.parametrize(
    ("options", "key"),
    [({"num_schemata": 2}, "schema"), ({"communication": "workspace", "write_k": 1}, "workspace_writes")],
)
def test_activation_statistics_report_the_familys_choices(options: dict, key: str) -> None:
    """SCOFF's schema per unit and the workspace's writers reach the statistics of rims-visualize."""
    from agents import RecurrentPPO
    from agents.analysis.activations import play_activations, summarize_activations
    from envs import make_minigrid_vec_env
    from envs.splits import load_split

    env = make_minigrid_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2, seed=0)
    core_kwargs = {"hidden_size": 16, "num_units": 4, "k": 2, **options}
    model = RecurrentPPO(
        "RecurrentPolicy", env, n_steps=16, batch_size=32, policy_kwargs={"core": "rim", "core_kwargs": core_kwargs}
    )
    condition = load_split("empty").test["iid"]
    recordings = play_activations(model, condition, episodes=2, max_steps=6)
    assert all(r.choices[key].shape == (6, 1, 4) for r in recordings)
    stats = summarize_activations(recordings)
    if key == "schema":
        assert len(stats["schema_frequency"]) == 4
        for unit, fractions in zip(range(4), stats["schema_frequency"], strict=True):
            assert fractions == [] or abs(sum(fractions) - 1.0) < 1e-9 or stats["unit_frequency"][unit] == 0
    else:
        assert len(stats["write_frequency"]) == 4 and 0 < sum(stats["write_frequency"]) <= 2
    env.close()
