"""Selection statistics while training: from every rollout and every periodic evaluation, at no extra forward pass.

A RIM unit that is inactive at a step keeps its state exactly (h and c; ``docs/design.md``, RIM semantics 5),
and an active one changes it (its own dynamics and the communication's residual update). So the active mask of
a step is where the state the core returned differs from the state it was given (:func:`changed_units`):
two comparisons of ``(num_layers, N, hidden_size)`` tensors per step, on the states acting already computes,
without asking the core for its :class:`rims.RIMInfo` (which only the step-by-step path records, at several
times the cost of the fused acting step). Two limits, both checked: cores whose communication updates inactive
units too (the shared workspace's broadcast) have no such mask and log nothing; and where the module starts
an episode from its own initial state (``initial_state="learned"`` / ``"random"``, drawn inside the core at
every reset), the state before an episode's first step is not one the callback sees, so every episode's first
step is left out of the statistics (``RecurrentCore.own_initial_state``); with zeros (the default) it counts.

:class:`SelectionStatsCallback` keeps the states of a rollout (references, no copies), reads the masks from them
in one batched comparison at the rollout's end and logs
:func:`agents.experiment.selection_stats.selection_summary` once per update as ``sel/rollout/<statistic>``
(``metrics.csv`` columns and W&B scalars through the run's logger). Non-RIM cores (``lstm``, ``gru``) log nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from torch import Tensor

from agents.cores import RecurrentCore
from agents.experiment.selection_stats import selection_summary
from rims import RIMGRU, RIMLSTM

ROLLOUT_PREFIX = "sel/rollout"


def mask_layout(core: RecurrentCore) -> tuple[int, int] | None:
    """``(num_units, k)`` of a RIM core whose state changes exactly where units are active; ``None`` otherwise
    (``lstm``/``gru``, or a layer whose communication updates inactive units)."""
    module = core.module
    if not isinstance(module, (RIMLSTM, RIMGRU)):
        return None
    if any(getattr(layer, "communication", "pairwise") != "pairwise" for layer in module.layers):
        return None
    return int(module.num_units), int(module.k) * int(module.num_layers)


def changed_units(
    previous: tuple[np.ndarray, ...], new: tuple[np.ndarray, ...], starts: np.ndarray, num_units: int
) -> np.ndarray:
    """The active masks of steps: units whose state changed.

    :param previous: the states before each step, before the reset of starting episodes, each
        ``(*B, num_layers, N, hidden_size)`` (``*B``: any leading dimensions, e.g. ``T`` steps, or none).
    :param new: the states the core returned, same shapes.
    :param starts: ``(*B, N)``, 1 where an episode starts at that step (its state was reset to zeros).
    :param num_units: units per layer.
    :returns: ``(*B, N, num_layers * num_units)`` bool, layer-major.
    """
    *lead, layers, envs, _ = new[0].shape
    keep = (1 - np.asarray(starts, dtype=new[0].dtype))[..., None, :, None]  # (*B, 1, N, 1): RecurrentCore's reset
    changed = np.zeros((*lead, layers, envs, num_units), dtype=bool)
    for before, after in zip(previous, new, strict=True):
        changed |= (after != before * keep).reshape(*lead, layers, envs, num_units, -1).any(axis=-1)
    return np.swapaxes(changed, -3, -2).reshape(*lead, envs, layers * num_units)  # (*B, N, Ly * U)


def _numpy(states: tuple[Tensor, ...]) -> tuple[np.ndarray, ...]:
    return tuple(s.cpu().numpy() for s in states)


class SelectionStatsCallback(BaseCallback):
    """Log the selection statistics of each rollout (module docstring) as ``<prefix>/<statistic>``.

    :param prefix: key prefix of the logged values.
    """

    def __init__(self, prefix: str = ROLLOUT_PREFIX) -> None:
        super().__init__()
        self.prefix = prefix
        self.layout: tuple[int, int] | None = None
        self._skip_first = False
        self._first: tuple[Tensor, ...] | None = None
        self._states: list[tuple[Tensor, ...]] = []
        self._starts: list[Tensor] = []

    def _init_callback(self) -> None:
        core = getattr(self.model.policy, "core", None)
        self.layout = mask_layout(core) if isinstance(core, RecurrentCore) else None
        self._skip_first = isinstance(core, RecurrentCore) and core.own_initial_state

    def _on_rollout_start(self) -> None:
        self._first = None if self.layout is None else self.model._last_lstm_states.pi
        self._states, self._starts = [], []

    def _on_step(self) -> bool:
        if self.layout is not None:  # keep references only: the masks are computed once, at the rollout's end
            self._states.append(self.locals["lstm_states"].pi)  # (h, c) each (Ly, N, H), new tensors every step
            self._starts.append(self.locals["episode_starts"])  # (N,) float
        return True

    def _on_rollout_end(self) -> None:
        if self.layout is None or not self._states or self._first is None:
            return
        after = _numpy(tuple(torch.stack(parts) for parts in zip(*self._states, strict=True)))  # each (T, Ly, N, H)
        first = _numpy(self._first)
        before = tuple(np.concatenate([f[None], part[:-1]]) for f, part in zip(first, after, strict=True))
        starts = torch.stack(self._starts).cpu().numpy()  # (T, N)
        masks = changed_units(before, after, starts, self.layout[0])  # (T, N, R)
        valid = starts == 0 if self._skip_first else None
        for key, value in selection_summary(masks, starts > 0, valid, k=self.layout[1]).items():
            self.logger.record(f"{self.prefix}/{key}", value)
        self._first, self._states, self._starts = None, [], []


class EvalMasks:
    """Active masks of an evaluation played with ``model.predict`` (:func:`agents.experiment.evaluation.run_episodes`).

    :param policy: the evaluated policy; a core without a mask (:func:`mask_layout`) records nothing.
    """

    def __init__(self, policy: Any) -> None:
        core = getattr(policy, "core", None)
        self.layout = mask_layout(core) if isinstance(core, RecurrentCore) else None
        self.skip_first = isinstance(core, RecurrentCore) and core.own_initial_state
        self.masks: list[np.ndarray] = []
        self.starts: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []

    def add(self, previous: Any, new: Any, starts: np.ndarray, valid: np.ndarray) -> None:
        """Record one step.

        :param previous: the states ``predict`` was given (``None`` at the first step: zeros), each
            ``(num_layers, N, hidden_size)`` arrays.
        :param new: the states it returned.
        :param starts: ``(N,)`` bool; ``valid``: ``(N,)`` bool, the environments whose step counts (an
            episode's first step never counts when the core starts from its own initial state).
        """
        if self.layout is None:
            return
        after = tuple(np.asarray(s) for s in new)
        before = tuple(np.zeros_like(a) for a in after) if previous is None else tuple(np.asarray(s) for s in previous)
        self.masks.append(changed_units(before, after, np.asarray(starts), self.layout[0]))
        self.starts.append(np.asarray(starts, dtype=bool).copy())
        counts = np.asarray(valid, dtype=bool) & ~np.asarray(starts, dtype=bool) if self.skip_first else valid
        self.valid.append(np.asarray(counts, dtype=bool).copy())

    def summary(self) -> dict[str, float]:
        """:func:`agents.experiment.selection_stats.selection_summary` of the recorded steps (empty without any)."""
        if self.layout is None or not self.masks:
            return {}
        return selection_summary(np.stack(self.masks), np.stack(self.starts), np.stack(self.valid), k=self.layout[1])
