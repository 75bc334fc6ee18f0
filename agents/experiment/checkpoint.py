"""Training checkpoints that resume bit-for-bit: model, optimizer, environments and RNGs.

A checkpoint is taken at a rollout boundary (after an update, before the next rollout), so
everything the rest of training depends on is: the policy and optimizer state (and every other
state dict SB3's ``save`` stores, e.g. fast/slow learning's slow optimizer), the
environments mid-episode (pickled), the last observations, episode-start flags and recurrent
states, the torch / NumPy / Python RNG states, the episode statistics, SB3 logger values
not yet dumped, and whatever the caller adds (evaluation history, metrics rows, W&B id).
Restoring all of it and calling ``learn`` with ``reset_num_timesteps=False`` continues
exactly as an uninterrupted run on CPU.

:func:`save` writes the file verified, with its checksum in the run folder's manifest, and keeps the
``keep - 1`` checkpoints before it (:func:`agents.experiment.manifest.write_verified`): a kill or a
full disk during a write leaves every earlier checkpoint intact. :mod:`agents.experiment.recovery`
finds the newest one that verifies and loads.
"""

from __future__ import annotations

import io
import random
from collections import deque
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.vec_env import VecEnv

from agents.experiment import manifest
from agents.experiment.faults import RunFolderError
from agents.experiment.interrupt import GracefulInterrupt

CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 1


def save(state: dict[str, Any], run_dir: Path, keep: int) -> None:
    """Write ``state`` (from :func:`capture`) as ``run_dir/checkpoint.pt``, verified, keeping ``keep`` checkpoints.

    :raises DiskFullError: no space for it (every earlier checkpoint is unchanged).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory: a full disk then fails a plain write, which names its cause
    manifest.write_verified(run_dir, CHECKPOINT, buffer.getbuffer(), frames=int(state["num_timesteps"]), keep=keep)


def capture(model: BaseAlgorithm, env: VecEnv, extra: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to continue training ``model`` on ``env`` (the unwrapped VecEnv).

    :param extra: caller state stored alongside (must be picklable).
    """
    logger = model.logger
    return {
        "version": FORMAT_VERSION,
        "num_timesteps": model.num_timesteps,
        "n_updates": model._n_updates,
        "episode_num": model._episode_num,
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "torch_states": {name: recursive_getattr(model, name).state_dict() for name in _extra_state_names(model)},
        "last_obs": model._last_obs,
        "last_episode_starts": model._last_episode_starts,
        "last_lstm_states": getattr(model, "_last_lstm_states", None),
        "env": cloudpickle.dumps(env),
        "ep_info_buffer": list(model.ep_info_buffer or []),
        "ep_success_buffer": list(model.ep_success_buffer or []),
        "logger_pending": (dict(logger.name_to_value), dict(logger.name_to_count), dict(logger.name_to_excluded)),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "extra": extra,
    }


def load(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` (its bytes ``data`` when already read).

    Uses full unpickling (``weights_only=False``): load only checkpoints you wrote.

    :raises RunFolderError: it was written by an incompatible version of the suite.
    """
    raw = path.read_bytes() if data is None else data
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("version") != FORMAT_VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise RunFolderError(
            f"{path} comes from an incompatible version of the suite "
            f"(checkpoint format {found!r}, this suite reads {FORMAT_VERSION})"
        )
    return state


def restore_env(state: dict[str, Any]) -> VecEnv:
    """The environments as they were at the checkpoint (build the model on these)."""
    return cloudpickle.loads(state["env"])


def restore(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    """Put ``model`` (built on :func:`restore_env`'s env, its logger already set) back into ``state``."""
    device = model.device
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    saved = state.get("torch_states", {})
    expected = _extra_state_names(model)
    if sorted(saved) != expected:
        raise ValueError(f"checkpoint holds the states of {sorted(saved)}, this model needs {expected}")
    for name in expected:
        recursive_getattr(model, name).load_state_dict(saved[name])
    model.num_timesteps = state["num_timesteps"]
    model._n_updates = state["n_updates"]
    model._episode_num = state["episode_num"]
    model._last_obs = state["last_obs"]
    model._last_episode_starts = state["last_episode_starts"]
    if state["last_lstm_states"] is not None:
        model._last_lstm_states = _to_device(state["last_lstm_states"], device)
    window = model._stats_window_size
    model.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=window)
    model.ep_success_buffer = deque(state["ep_success_buffer"], maxlen=window)
    values, counts, excluded = state["logger_pending"]
    model.logger.name_to_value.update(values)
    model.logger.name_to_count.update(counts)
    model.logger.name_to_excluded.update(excluded)
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])


def _extra_state_names(model: BaseAlgorithm) -> list[str]:
    """What SB3's ``save`` stores by state dict besides the policy and its optimizer (e.g. the
    slow group's learner of fast/slow learning, :mod:`agents.fast_slow`), sorted."""
    return sorted(set(model._get_torch_save_params()[0]) - {"policy", "policy.optimizer"})


def _to_device(value: Any, device: torch.device) -> Any:
    """``value`` (tensors in nested tuples / named tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        moved = [_to_device(v, device) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else tuple(moved)
    return value


class CheckpointCallback(BaseCallback):
    """Checkpoint at rollout boundaries every ``every_frames``, and stop after one on a signal.

    :param save: writes a checkpoint of the current state (called between rollouts).
    :param every_frames: frames between periodic checkpoints.
    :param interrupt: when it reports a stop request, checkpoint at the next boundary and
        end ``learn``.
    """

    def __init__(self, save: Any, every_frames: int, interrupt: GracefulInterrupt) -> None:
        super().__init__()
        if every_frames < 1:
            raise ValueError(f"every_frames must be >= 1, got {every_frames}")
        self.save, self.every_frames, self.interrupt = save, every_frames, interrupt
        self.stopping = False
        self.saved_frames: int | None = None  # frames of the last checkpoint this callback wrote
        self._last_frames: int | None = None

    def _on_rollout_start(self) -> None:
        if self._last_frames is None:
            self._last_frames = self.num_timesteps
            if not self.interrupt.requested:
                return
        if self.interrupt.requested or self.num_timesteps - self._last_frames >= self.every_frames:
            self.save()
            self._last_frames = self.saved_frames = self.num_timesteps
        self.stopping = self.interrupt.requested

    def _on_step(self) -> bool:
        return not self.stopping
