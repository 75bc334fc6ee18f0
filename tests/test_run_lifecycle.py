"""Run folder lifecycle: W&B offline files, checkpoints, resume equals uninterrupted, signals, CLI."""

from __future__ import annotations

import csv
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import load_from_zip_file

from agents.experiment import checkpoint
from agents.experiment.atomic import atomic_path, atomic_write_text
from agents.experiment.interrupt import GracefulInterrupt
from agents.experiment.run import ConfigError, TrainingInterruptedError, train
from agents.experiment.wandb_logger import WandbRun
from tests.wandb_records import logged, record_kinds, run_file

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "env=empty", "total_frames=128", "n_envs=2", "eval.every_frames=64", "eval.episodes=1",
    "eval.final_episodes=2", "eval.gif_max_steps=4", "agent.n_steps=16", "agent.batch_size=32",
    "model.hidden_size=16", "checkpoint.every_frames=32", "progress_bar=false",
]  # fmt: skip


# Evaluations in tiny runs: the iid condition only and no GIFs, unless a test asks for more (later
# overrides win). An untrained policy plays every 16x16 episode to its time limit and each GIF
# renders every frame: ~10 s a run.
QUICK_EVAL = ["eval.conditions=[iid]", "eval.gifs=false"]


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=[*QUICK_EVAL, *overrides])


class _SignalAt(BaseCallback):
    """Send ``signum`` to this process once ``frames`` frames have been collected."""

    def __init__(self, frames: int, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.frames, self.signum, self.sent = frames, signum, False

    def _on_step(self) -> bool:
        if not self.sent and self.num_timesteps >= self.frames:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return True


def _policy(run: Path) -> dict[str, torch.Tensor]:
    return load_from_zip_file(run / "model.zip")[1]["policy"]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    return run, train(_compose([*TINY, "logger=none"]), run)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_resumed_run_equals_the_uninterrupted_run(
    uninterrupted: tuple[Path, dict[str, float]], signum: int, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    handler = signal.getsignal(signum)
    logger = "logger=none" if signum == signal.SIGINT else "logger=wandb"
    with pytest.raises(TrainingInterruptedError) as stop:
        train(_compose([*TINY, logger]), run, callbacks=[_SignalAt(40, signum)])
    assert stop.value.signum == signum and stop.value.frames == 64  # the next rollout boundary
    assert not (run / "model.zip").exists() and not (run / "metrics.json").exists()
    assert signal.getsignal(signum) is handler  # handlers restored
    metrics = train(_compose([*TINY, logger, "resume=true"]), run)
    reference, reference_metrics = uninterrupted
    if logger == "logger=wandb":  # the resumed run continues the same W&B run
        # offline-run-<date>_<time>-<id>, with "-1" appended when the resumed run starts in the same second
        ids = {
            re.fullmatch(r"offline-run-\d+_\d+-([^-]+)(-\d+)?", p.name)[1]
            for p in (run / "wandb").glob("offline-run-*")
        }
        assert len(ids) == 1, ids
    assert metrics == reference_metrics
    expected, got = _policy(reference), _policy(run)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _rows(run) == _rows(reference)
    assert (run / "ood_curves.json").read_text() == (reference / "ood_curves.json").read_text()


def test_resume_of_a_finished_run_returns_its_metrics_without_work(
    uninterrupted: tuple[Path, dict[str, float]],
) -> None:
    run, metrics = uninterrupted
    assert checkpoint.load(run / checkpoint.CHECKPOINT)["num_timesteps"] == 128
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert train(_compose([*TINY, "logger=none", "resume=true"]), run) == metrics
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_a_run_folder_is_never_overwritten_or_resumed_with_another_config(
    uninterrupted: tuple[Path, dict[str, float]],
) -> None:
    run, _ = uninterrupted
    before = (run / "model.zip").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; pass resume=true"):
        train(_compose([*TINY, "logger=none"]), run)
    with pytest.raises(ConfigError, match=r"cannot resume .*: seed was 0 in that run, got 1"):
        train(_compose([*TINY, "logger=none", "resume=true", "seed=1"]), run)
    assert (run / "model.zip").read_bytes() == before


def test_a_run_folder_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with (run / ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="is in use by another process"):
            train(_compose([*TINY, "logger=none"]), run)
    assert not (run / "config.yaml").exists()


def test_resume_before_the_first_checkpoint_starts_over_with_the_same_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(_compose([*TINY, "logger=none"]), resolve=True))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_compose([*TINY, "logger=none"]), run)
    with pytest.raises(ConfigError, match=r"seed was 0 in that run, got 1"):
        train(_compose([*TINY, "logger=none", "resume=true", "seed=1"]), run)
    metrics = train(_compose([*TINY, "logger=none", "resume=true"]), run)
    assert "iid" in metrics and (run / "model.zip").is_file()


class _RaiseAt(BaseCallback):
    """Raise a ``RuntimeError`` once ``frames`` frames have been collected."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.frames:
            raise RuntimeError("simulated failure\nin the middle of training")
        return True


def test_a_run_that_raises_is_marked_failed_and_resume_refuses_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated failure"):
        train(_compose([*TINY, "logger=none"]), run, callbacks=[_RaiseAt(40)])
    marker = (run / "FAILED").read_text().splitlines()
    assert marker[:2] == ["kind: code", "cause: RuntimeError: in the middle of training"]
    with pytest.raises(ConfigError, match=r"cannot resume .*: its training failed \(RuntimeError: in the middle"):
        train(_compose([*TINY, "logger=none", "resume=true"]), run)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_graceful_interrupt_signals() -> None:
    with GracefulInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGUSR2)  # SLURM's time-limit warning under submitit
        assert interrupt.signum == signal.SIGUSR2
        os.kill(os.getpid(), signal.SIGTERM)  # repeated scheduler signals are ignored
        assert interrupt.signum == signal.SIGUSR2
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint.save({"version": checkpoint.FORMAT_VERSION, "num_timesteps": 1}, tmp_path, keep=1)
    real_open = Path.open

    def dying_open(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real_open(self, mode, *args, **kwargs)
        if "w" in mode and self.name.startswith(f".{checkpoint.CHECKPOINT}."):
            handle.write(b"partial")
            handle.close()
            raise KeyboardInterrupt  # the process "dies" mid-write
        return handle

    monkeypatch.setattr(Path, "open", dying_open)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"version": checkpoint.FORMAT_VERSION, "num_timesteps": 2}, tmp_path, keep=1)
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / checkpoint.CHECKPOINT)["num_timesteps"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.CHECKPOINT, "manifest.json"]


def test_atomic_writes_leave_the_old_file_and_no_temporary_files_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_wandb_offline_run_holds_config_scalars_curves_table_and_gifs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_compose([*TINY, "model=gru", "logger.group=g1", "eval.conditions=null", "eval.gifs=true"]), run)
    found = logged(run_file(run))
    config = found["config"]
    assert "model" in config, f"run config keys: {sorted(config)}; records: {record_kinds(run_file(run))}"
    assert config["model"]["core"] == "gru" and config["seed"] == 0
    history = found["history"]
    for key in ("train/value_loss", "train/policy_gradient_loss", "ood/iid/mean_return", "ood/empty_8x8/success"):
        assert key in history, key
    assert history["eval/final/_type"] == "table-file" and history["ood/curves/_type"] == "table-file"
    assert history["episode/empty_6x6/_type"] == "video-file"
    assert "eval/iid/mean_return" in found["summary"]
    assert sorted(p.name for p in (run / "media").iterdir()) == sorted(
        f"{c}.gif" for c in ("iid", "empty_6x6", "empty_8x8", "empty_16x16", "empty_random_6x6",
                             "iid_background", "iid_distractors")
    )  # fmt: skip


def test_wandb_that_cannot_start_warns_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network")

    monkeypatch.setattr("wandb.init", broken)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with caplog.at_level("WARNING"):
        run = WandbRun.start(mode="online", project="p", run_dir=tmp_path, config={})
    assert not run.active
    assert "needs an API key" in caplog.text and "could not start in offline mode" in caplog.text
    run.log({"x": 1.0}, step=1)
    run.finish()
    metrics = train(_compose([*TINY, "total_frames=32", "eval.gifs=false"]), tmp_path / "run")
    assert "iid" in metrics and (tmp_path / "run" / "metrics.csv").is_file()


def test_wandb_failing_mid_run_turns_itself_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        id = "x"

        def log(self, *args: object, **kwargs: object) -> None:
            raise OSError("disk full")

    run = WandbRun(Broken())
    with caplog.at_level("WARNING"):
        run.log({"a": 1.0}, step=1)
        run.log({"a": 2.0}, step=2)
    assert not run.active and caplog.text.count("W&B log failed") == 1


def test_cli_sigterm_checkpoints_exits_143_and_resume_finishes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    script = str(ROOT / "scripts" / "train.py")
    args = [*TINY, "total_frames=2048", "logger=none", "eval.every_frames=100000", *QUICK_EVAL]
    process = subprocess.Popen(
        [sys.executable, script, *args, f"hydra.run.dir={run}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert f"resume with: rims-train resume={run}" in stderr
    frames = checkpoint.load(run / checkpoint.CHECKPOINT)["num_timesteps"]
    assert 0 < frames < 2048 and not (run / "model.zip").exists()
    refused = subprocess.run([sys.executable, script, f"resume={run}", "seed=3"], capture_output=True, text=True)
    assert refused.returncode == 2 and "drop the overrides ['seed=3']" in refused.stderr
    resumed = subprocess.run([sys.executable, script, f"resume={run}"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "total_frames=2048" in (run / ".hydra" / "overrides.yaml").read_text()  # the original command
    assert len(list((run / ".hydra").glob("resume-*/overrides.yaml"))) == 2
    assert (run / "metrics.json").is_file() and checkpoint.load(run / checkpoint.CHECKPOINT)["num_timesteps"] == 2048


@pytest.mark.slow
@pytest.mark.parametrize("core", ["lstm", "rim"])
def test_the_suite_learns_the_empty_split(core: str, tmp_path: Path) -> None:
    """End to end through ``train``: PPO solves the train levels of ``empty`` (``pytest -m slow``).

    In the 2-seed sweep of the closing note (100k frames) every run reached iid return 0.955.
    """
    overrides = [f"model={core}", "env=empty", "total_frames=60000", "eval.every_frames=60000",
                 "eval.final_episodes=20", "eval.gifs=false", "logger=none", "progress_bar=false"]  # fmt: skip
    metrics = train(_compose(overrides), tmp_path / "run")
    assert metrics["iid"] >= 0.9
