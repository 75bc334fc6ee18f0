"""Faults a long run meets (issue 24): a full disk, damaged checkpoint and model files, signals mid-write.

Each fault is injected without privileges (patched file objects: :mod:`tests.full_disk`; truncated
and bit-flipped files). Each test checks that nothing already written is lost, that the message
names the file and the cause, and that resuming reaches the final metrics of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.cli import evaluate as evaluate_cli
from agents.cli import sweep_failures
from agents.experiment import checkpoint, faults, manifest, recovery
from agents.experiment.atomic import DiskFullError
from agents.experiment.faults import EnvironmentFailureError, RunFolderError
from agents.experiment.run import TrainingInterruptedError, train
from agents.experiment.run_folder import load_run
from tests.full_disk import FullDisk, files
from tests.test_run_lifecycle import QUICK_EVAL, ROOT, TINY, _compose, _policy, _rows, _SignalAt

RUN = [*TINY, "logger=none"]  # 128 frames; checkpoints at 32, 64, 96 and 128 frames


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], int]:
    """An uninterrupted run: its folder, final metrics, and the bytes it wrote into the folder."""
    run = tmp_path_factory.mktemp("reference") / "run"
    disk = FullDisk(run, budget=10**12).install()
    try:
        metrics = train(_compose(RUN), run)
    finally:
        disk.free()
    return run, metrics, disk.written


def _same_as_reference(run: Path, metrics: dict[str, float], reference: tuple[Path, dict[str, float], int]) -> None:
    reference_run, reference_metrics, _ = reference
    assert metrics == reference_metrics
    expected, got = _policy(reference_run), _policy(run)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _rows(run) == _rows(reference_run)


@pytest.mark.parametrize("fraction", [0.0001, 0.05, 0.3, 0.6, 0.9, 0.99])
def test_a_disk_that_fills_up_anywhere_loses_nothing_and_resume_equals_the_uninterrupted_run(
    fraction: float, reference: tuple[Path, dict[str, float], int], tmp_path: Path
) -> None:
    """The disk fills up at a fraction of the bytes a whole run writes: in config.yaml (0.0001), a
    checkpoint, the manifest, metrics.csv, model.zip or the final evaluation, wherever that byte falls."""
    run = tmp_path / "run"
    disk = FullDisk(run, budget=int(fraction * reference[2])).install()
    try:
        with pytest.raises(EnvironmentFailureError, match="no space left on device") as failure:
            train(_compose(RUN), run)
    finally:
        disk.free()
    assert disk.snapshot is not None
    assert files(run) == disk.snapshot  # nothing written before is lost or changed, no marker fits
    assert str(run) in failure.value.cause and "free on" in failure.value.cause
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporaries
    _same_as_reference(run, train(_compose([*RUN, "resume=true"]), run), reference)


def test_a_disk_full_during_a_checkpoint_says_what_was_needed_and_keeps_the_last_good_one(
    reference: tuple[Path, dict[str, float], int], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    disk = FullDisk(run, budget=1000, prefix=f".{checkpoint.CHECKPOINT}.", skip=2).install()  # the third one
    try:
        with pytest.raises(EnvironmentFailureError) as failure:
            train(_compose(RUN), run)
    finally:
        disk.free()
    message = str(failure.value)
    assert f"no space left on device writing {run / checkpoint.CHECKPOINT} (it needs " in message
    assert f"the last good checkpoint ({run / checkpoint.CHECKPOINT}, 64 frames) is kept" in message
    assert isinstance(failure.value.__cause__, DiskFullError)
    assert not (run / faults.FAILED).exists()  # the full disk refused the marker too: resume as after a kill
    assert [p.name for p in manifest.family(run, checkpoint.CHECKPOINT)] == ["checkpoint.pt", "checkpoint.1.pt"]
    assert recovery.newest_checkpoint(run).frames == 64  # type: ignore[union-attr]
    _same_as_reference(run, train(_compose([*RUN, "resume=true"]), run), reference)


def test_an_environmental_failure_is_marked_resumable_and_a_code_failure_is_refused(
    reference: tuple[Path, dict[str, float], int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    with pytest.raises(EnvironmentFailureError, match="the file system is read-only: /data/x"):
        train(_compose(RUN), run, callbacks=[_RaiseAt(70, OSError(errno.EROFS, "Read-only file system", "/data/x"))])
    assert (run / faults.FAILED).read_text().startswith("kind: environment\ncause: the file system is read-only")
    with caplog.at_level(logging.WARNING):
        metrics = train(_compose([*RUN, "resume=true"]), run)
    assert "stopped because of its environment (the file system is read-only: /data/x); resuming it" in caplog.text
    assert not (run / faults.FAILED).exists()
    _same_as_reference(run, metrics, reference)


def test_a_run_folder_that_cannot_be_made_is_an_environmental_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(
        EnvironmentFailureError, match=r"the file system is read-only: .*run; .* holds no good checkpoint"
    ):
        train(_compose(RUN), tmp_path / "run")


@pytest.mark.parametrize("damage", ["truncate", "flip", "truncate_without_manifest"])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(
    damage: str, reference: tuple[Path, dict[str, float], int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingInterruptedError):
        train(_compose(RUN), run, callbacks=[_SignalAt(70)])  # stops at 96 frames; 64 is the one before
    newest = run / checkpoint.CHECKPOINT
    original = newest.read_bytes()
    damaged = _flip(original, len(original) // 2) if damage == "flip" else original[: len(original) // 2]
    newest.write_bytes(damaged)
    if damage == "truncate_without_manifest":  # a run folder from before manifests: damage found by loading
        (run / manifest.MANIFEST).unlink()
    stale = run / f".{checkpoint.CHECKPOINT}.x1y2.tmp.pt"  # what a kill -9 mid-write leaves
    stale.write_bytes(original[:1000])
    with caplog.at_level(logging.WARNING):
        metrics = train(_compose([*RUN, "resume=true"]), run)
    assert f"{newest} is damaged" in caplog.text and "using checkpoint.1.pt (64 frames) instead" in caplog.text
    assert (run / "checkpoint.pt.damaged").read_bytes() == damaged  # kept, set aside
    assert not stale.exists()
    _same_as_reference(run, metrics, reference)


def test_no_usable_checkpoint_is_refused_naming_each_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingInterruptedError):
        train(_compose(RUN), run, callbacks=[_SignalAt(70)])
    for path in manifest.family(run, checkpoint.CHECKPOINT):
        path.write_bytes(path.read_bytes()[:100])
    before = files(run)
    with pytest.raises(
        RunFolderError, match=r"no checkpoint of .* can be used: .*checkpoint.pt is damaged.*checkpoint.1.pt"
    ):
        train(_compose([*RUN, "resume=true"]), run)
    assert files(run) == before


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_model_zip_is_evaluated_from_the_checkpoint(
    damage: str,
    reference: tuple[Path, dict[str, float], int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    zip_bytes = (run / "model.zip").read_bytes()
    damaged = zip_bytes[: len(zip_bytes) // 2] if damage == "truncate" else _flip(zip_bytes, len(zip_bytes) // 2)
    (run / "model.zip").write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        model = load_run(run)[0]
    assert f"{run / 'model.zip'} is damaged" in caplog.text
    assert f"using the policy of {run / checkpoint.CHECKPOINT} (128 frames) instead" in caplog.text
    expected = _policy(reference[0])
    assert all(torch.equal(expected[k], v) for k, v in model.policy.state_dict().items())
    args = [str(run), "--episodes", "1", "--conditions", "iid", "--modes", "deterministic", "--n-envs", "1"]
    assert evaluate_cli.main([*args, "--out", str(tmp_path / "eval")]) == 0
    for path in manifest.family(run, checkpoint.CHECKPOINT):  # the other way round: no good copy left
        path.write_bytes(path.read_bytes()[:100])
    assert evaluate_cli.main([*args, "--out", str(tmp_path / "eval2")]) == 2
    error = capsys.readouterr().err
    assert f"error: {run / 'model.zip'} is damaged" in error and "no checkpoint of" in error
    assert "Traceback" not in error


def test_a_finished_run_with_damaged_checkpoints_keeps_its_results(
    reference: tuple[Path, dict[str, float], int], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    for path in manifest.family(run, checkpoint.CHECKPOINT):
        path.write_bytes(b"")
    assert train(_compose([*RUN, "resume=true"]), run) == reference[1]


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "ctrl_c_twice"])
def test_a_signal_during_a_checkpoint_write_loses_nothing(
    signals: list[int], reference: tuple[Path, dict[str, float], int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM mid-write: the checkpoint completes and training stops after it; a second Ctrl-C
    mid-write stops at once: the write is abandoned and every earlier checkpoint is intact."""
    run = tmp_path / "run"
    real = manifest.write_durably
    writes: list[Path] = []

    def signalled(path: Path, data: bytes | memoryview) -> None:
        writes.append(path)
        if len(writes) == 3:  # the checkpoint of 96 frames, its temporary file open: 32 and 64 are on disk
            for signum in signals:
                os.kill(os.getpid(), signum)
        real(path, data)

    monkeypatch.setattr(manifest, "write_durably", signalled)
    stop = TrainingInterruptedError if len(signals) == 1 else KeyboardInterrupt
    with pytest.raises(stop):
        train(_compose(RUN), run)
    monkeypatch.undo()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert recovery.newest_checkpoint(run).frames == (96 if stop is TrainingInterruptedError else 64)  # type: ignore[union-attr]
    _same_as_reference(run, train(_compose([*RUN, "resume=true"]), run), reference)


def test_cli_disk_full_exits_75_without_a_traceback_and_resume_finishes(
    reference: tuple[Path, dict[str, float], int], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    command = _train_command()
    env = {**os.environ, "FULL_DISK": f"{run}:.{checkpoint.CHECKPOINT}.:2:1000"}
    failed = subprocess.run(
        [*command, *RUN, *QUICK_EVAL, f"hydra.run.dir={run}"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert failed.returncode == 75, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr
    assert f"error: training stopped: no space left on device writing {run / checkpoint.CHECKPOINT}" in failed.stderr
    assert f"resume with: rims-train resume={run}" in failed.stderr
    resumed = subprocess.run([*command, f"resume={run}"], capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run} from checkpoint.pt (64 frames)" in resumed.stdout + resumed.stderr
    _same_as_reference(run, json.loads((run / "metrics.json").read_text()), reference)


def test_a_sweep_lists_a_job_stopped_by_a_full_disk_as_resumable_and_resume_continues_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    job = sweep / "1_ppo_gru_empty_s0"
    command = [*_train_command(), "-m", "model=lstm,gru", *RUN, *QUICK_EVAL, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "FULL_DISK": f"{job}:.{checkpoint.CHECKPOINT}.:2:1000"}  # its checkpoint of 96 frames
    failed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    rows = [line.split("\t") for line in (sweep / sweep_failures.FAILED_JOBS).read_text().splitlines()]
    assert [(row[0], row[2]) for row in rows] == [("1", "resumable")] and "no space left on device" in rows[0][3]
    assert "1 job(s) can resume" in failed.stderr and f"resume=true hydra.sweep.dir={sweep}" in failed.stderr
    assert (sweep / "0_ppo_lstm_empty_s0" / "metrics.json").is_file() and not (job / "metrics.json").exists()
    resumed = subprocess.run([*command, "resume=true"], capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (job / "metrics.json").is_file() and not (sweep / sweep_failures.FAILED_JOBS).exists()


@pytest.mark.parametrize(
    ("error", "environmental"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), True),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone/run"), True),
        (MemoryError(), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2807360 vs 2807248"), True),
        (type("CommError", (Exception,), {"__module__": "wandb.errors"})("lost the W&B connection"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("bad value"), False),
        (KeyError("policy"), False),
    ],
)
def test_failures_are_told_apart(error: BaseException, environmental: bool) -> None:
    assert faults.is_environmental(error) is environmental
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = error
    assert faults.is_environmental(wrapped) is environmental
    assert "Traceback" not in faults.describe(error)


def test_markers_of_both_kinds_and_from_before_kinds(tmp_path: Path) -> None:
    assert faults.mark_failed(tmp_path, MemoryError()).resumable
    assert faults.read_marker(tmp_path) == faults.Marker("environment", "out of memory")
    (tmp_path / faults.FAILED).write_text("RuntimeError: in the middle of training\n")  # written before kinds
    assert faults.read_marker(tmp_path) == faults.Marker("code", "RuntimeError: in the middle of training")


def test_verified_writes_keep_the_last_good_files_and_never_remove_one_before_its_successor_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for frames in (1, 2, 3, 4):
        checkpoint.save({"version": checkpoint.FORMAT_VERSION, "num_timesteps": frames}, tmp_path, keep=3)
    kept = manifest.family(tmp_path, checkpoint.CHECKPOINT)
    assert [checkpoint.load(p)["num_timesteps"] for p in kept] == [4, 3, 2]
    before = files(tmp_path)
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: b"garbage" if p.name.startswith(".") else real(p))
    with pytest.raises(OSError, match="the bytes read back differ from those written"):
        checkpoint.save({"version": checkpoint.FORMAT_VERSION, "num_timesteps": 5}, tmp_path, keep=3)
    monkeypatch.undo()
    assert files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_files_of_an_incompatible_version_are_refused_with_the_versions(tmp_path: Path) -> None:
    checkpoint.save({"version": 99, "num_timesteps": 1}, tmp_path, keep=1)
    with pytest.raises(RunFolderError, match=r"incompatible version of the suite \(checkpoint format 99, this suite"):
        recovery.newest_checkpoint(tmp_path)
    (tmp_path / manifest.MANIFEST).write_text('{"format": 2, "files": []}')
    with pytest.raises(RunFolderError, match=r"incompatible version of the suite \(run folder format 2, this suite"):
        recovery.newest_checkpoint(tmp_path)


class _RaiseAt(BaseCallback):
    """Raise ``error`` once ``frames`` frames have been collected."""

    def __init__(self, frames: int, error: BaseException) -> None:
        super().__init__()
        self.frames, self.error = frames, error

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.frames:
            raise self.error
        return True


def _flip(data: bytes, index: int) -> bytes:
    """``data`` with the bits of one byte flipped."""
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


def _train_command() -> list[str]:
    """``scripts/train.py`` in a child process with the :class:`FullDisk` of ``$FULL_DISK`` installed."""
    install = (
        "import runpy, sys; from tests.full_disk import install_from_env; install_from_env(); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return [sys.executable, "-c", install, str(ROOT / "scripts" / "train.py")]
