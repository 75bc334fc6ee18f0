"""Recurrent cores by name, behind one interface, so every core runs through the same code."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rims import RIMGRU, RIMLSTM
from rims.remedies import acting_noise, counted_rows, replayed_noise

CORES: tuple[str, ...] = ("lstm", "gru", "rim", "rim_gru")
DEFAULT_HIDDEN_SIZE = 128
RIM_DEFAULTS: dict[str, Any] = {"num_units": 4, "k": 3, "attention_dropout": 0.0}
"""The agents' defaults for a RIM core where they differ from the layer's (:mod:`rims.options`, which has
no ``num_units``/``k`` defaults): 4 units, 3 active; no attention dropout, because rollouts run in eval
mode and training in train mode, so dropout would make the PPO ratio differ from 1. The one home of
these values: the typed model config (``agents/experiment/config/model.py``) reads them from here."""


def make_core(name: str, input_size: int, **core_kwargs: Any) -> RecurrentCore:
    """Build the recurrent core ``name`` on ``input_size`` features.

    :param name: one of :data:`CORES`.
    :param core_kwargs: ``hidden_size`` (default :data:`DEFAULT_HIDDEN_SIZE`) for every core; for ``rim``/``rim_gru``
        also ``num_units``, ``k`` and any keyword of :class:`rims.RIMLSTM` (attention sizes,
        ``selection``, ...), defaults from :data:`RIM_DEFAULTS` and then the layer's.
    :raises ValueError: unknown name (listing the valid ones) or RIM options for a plain core.
    """
    if name not in CORES:
        raise ValueError(f"unknown recurrent core {name!r}; valid cores are {list(CORES)}")
    kwargs = dict(core_kwargs)
    hidden_size = kwargs.pop("hidden_size", DEFAULT_HIDDEN_SIZE)
    if name in ("lstm", "gru"):
        if kwargs:
            raise ValueError(f"core {name!r} takes only hidden_size, got extra options {sorted(kwargs)}")
        module: nn.Module = (nn.LSTM if name == "lstm" else nn.GRU)(input_size, hidden_size)
    else:
        kwargs = {**RIM_DEFAULTS, **kwargs}
        num_units, k = kwargs.pop("num_units"), kwargs.pop("k")
        module = (RIMLSTM if name == "rim" else RIMGRU)(input_size, hidden_size, num_units, k, **kwargs)
    return RecurrentCore(module, has_cell=name in ("lstm", "rim"))


class RecurrentCore(nn.Module):
    """A one-layer-or-more recurrent module with a fixed ``(h, c)`` state interface.

    GRU-type cores carry a zero ``c`` so that every core fits sb3-contrib's recurrent rollout
    buffer, which stores two state tensors.

    Two hooks a module may offer: ``initial_state(batch, like)`` (the state of an episode's first
    step, ``(h_0, c_0)`` or ``(h_0,)`` each ``(num_layers, batch, hidden_size)``; used at every episode
    start when the module's ``options.initial_state`` is not ``"zeros"``, as for
    :class:`rims.RIMLSTM` with ``initial_state="learned"`` or ``"random"``), and ``aux_loss()`` (a
    scalar loss term from its last training forward, already weighted, or ``None``; see
    :meth:`aux_loss`).

    :param module: an ``nn.LSTM``/``nn.GRU``-compatible module (time-major).
    :param has_cell: whether ``module`` takes and returns ``(h, c)``.
    """

    def __init__(self, module: nn.Module, has_cell: bool) -> None:
        super().__init__()
        self.module = module
        self.has_cell = has_cell
        self.num_layers: int = module.num_layers
        self.hidden_size: int = module.hidden_size
        self._single_cell = (
            type(module) in (nn.LSTM, nn.GRU)
            and module.num_layers == 1
            and not module.bidirectional
            and not module.batch_first
            and getattr(module, "proj_size", 0) == 0
        )
        # the module's own initial state at episode starts (rims: initial_state="learned" / "random"); then the
        # state before an episode's first step is drawn here, not the one a caller passed (read by selection_log)
        initial_state = getattr(getattr(module, "options", None), "initial_state", "zeros")
        self.own_initial_state: bool = initial_state != "zeros"
        # Rollout draws, replayed in the update: a random initial state and a RIM core's noisy top-k are drawn in
        # a rollout's acting steps (rollout()), kept for the buffer (last_initial, last_noise) and replayed by the
        # packed update (forward's noise; agents.buffers), once the algorithm that owns the buffer sets
        # keeps_rollout_draws (agents.ppo); otherwise the update draws its own, and rollouts draw no noise
        self.replays_initial_state: bool = initial_state == "random"
        self.replays_noise: bool = getattr(getattr(module, "options", None), "selection_noise", 0.0) > 0
        self.keeps_rollout_draws: bool = False
        self.last_initial: tuple[Tensor, ...] | None = None
        self.last_noise: Tensor | None = None
        self._drawn_initial: tuple[Tensor, ...] | None = None  # the last reset's draw, any call

    def forward(
        self,
        features: Tensor,
        states: tuple[Tensor, Tensor],
        episode_starts: Tensor,
        counted: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run padded sequences, resetting the state where an episode starts.

        :param features: ``(L, N, F)`` time-major features.
        :param states: ``(h, c)`` each ``(num_layers, N, hidden_size)``.
        :param episode_starts: ``(L, N)``, 1.0 where a new episode starts at that step.
        :param counted: ``(L, N)``, 1.0 for the real samples and 0.0 for padding, or ``None`` (all real):
            a RIM core's selection remedies count only the real ones (:func:`rims.remedies.counted_rows`).
        :param noise: ``(L, N, num_layers, U)`` selection-noise draws a RIM core's training call takes instead of
            drawing (:func:`rims.remedies.replayed_noise`; what :meth:`rollout` kept), or ``None``.
        :returns: ``(output (L, N, hidden_size), (h, c))``.

        When episode starts occur only at the first step (always true for sb3-contrib's
        training sequences, which are split at episode starts, and for one-step acting), the
        state is reset once and the whole sequence is one call of the module; otherwise the
        sequence is processed step by step.
        """
        if episode_starts.shape[0] == 1 or not torch.any(episode_starts[1:] > 0):
            keep = (1.0 - episode_starts[0]).view(1, -1, 1)
            with counted_rows(self.module, counted), replayed_noise(self.module, noise):
                return self._call(features, self._reset(states, keep))
        outputs = []
        for t in range(features.shape[0]):
            keep = (1.0 - episode_starts[t]).view(1, -1, 1)
            step_noise = None if noise is None else noise[t : t + 1]
            step_counted = None if counted is None else counted[t : t + 1]
            with counted_rows(self.module, step_counted), replayed_noise(self.module, step_noise):
                out, states = self._call(features[t : t + 1], self._reset(states, keep))
            outputs.append(out)
        return torch.cat(outputs), states

    def rollout(
        self, features: Tensor, states: tuple[Tensor, Tensor], episode_starts: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One acting step of a rollout (arguments and result as :meth:`forward`'s, ``L = 1``).

        With :attr:`keeps_rollout_draws`, a RIM core with selection noise draws it although acting runs in
        evaluation mode (:func:`rims.remedies.acting_noise`; predicting and evaluating never do) and keeps the
        draws in :attr:`last_noise` ``(1, N, num_layers, U)`` (zeros when the scale has annealed to 0), and a
        random initial state drawn at the step's episode starts is kept in :attr:`last_initial`
        (``(h_0[, c_0])`` each ``(num_layers, N, hidden_size)``; ``None`` when no episode starts). Only this
        method sets them, so the calls between a step and the buffer's ``add`` (value bootstraps, callbacks
        that evaluate) leave them alone.
        """
        self._drawn_initial = None
        if not (self.keeps_rollout_draws and self.replays_noise):
            result = self(features, states, episode_starts)
            draws: list[Tensor] = []
        else:
            with acting_noise(self.module) as draws:
                result = self(features, states, episode_starts)
        if self.keeps_rollout_draws:
            self.last_initial = self._drawn_initial
            self.last_noise = self._stacked_noise(draws, features) if self.replays_noise else None
        return result

    def _stacked_noise(self, draws: list[Tensor], features: Tensor) -> Tensor:
        """One acting call's draws, ``eps`` ``(1, U, N, 1)`` per layer, as ``(1, N, num_layers, U)``.

        :raises RuntimeError: draws of other than one call (one per layer, or none once the noise has annealed).
        """
        layers, units = self.module.num_layers, self.module.num_units
        if not draws:
            return features.new_zeros(features.shape[0], features.shape[1], layers, units)
        if len(draws) != layers or draws[0].shape[0] != 1:
            raise RuntimeError(f"a rollout step draws once per layer ({layers}), got {len(draws)} draws")
        return torch.stack([eps.squeeze(-1).transpose(1, 2) for eps in draws], dim=2)

    def _reset(self, states: tuple[Tensor, Tensor], keep: Tensor) -> tuple[Tensor, Tensor]:
        """The states with the rows where an episode starts reset: to zeros, or to the module's
        ``initial_state`` (drawn afresh for a random one, at every reset).

        :param states: ``(h, c)`` each ``(num_layers, N, hidden_size)``; ``keep``: ``(1, N, 1)``, 0.0 at a start.
        """
        kept = (states[0] * keep, states[1] * keep)
        if not self.own_initial_state or not bool(torch.any(keep == 0)):
            return kept
        start = 1.0 - keep
        initial = self.module.initial_state(keep.shape[1], states[0])  # (h_0[, c_0]) (num_layers, N, hidden)
        if self.keeps_rollout_draws and self.replays_initial_state:  # rollout() keeps it for the buffer
            self._drawn_initial = tuple(t.detach() for t in initial)
        h = torch.addcmul(kept[0], start, initial[0])
        c = torch.addcmul(kept[1], start, initial[1]) if len(initial) > 1 else kept[1]
        return h, c

    def aux_loss(self) -> Tensor | None:
        """The module's loss term from its last training forward (``module.aux_loss()``, e.g. the RIM's
        balance loss, option ``balance_loss``), or ``None``: what PPO and A2C add to their loss."""
        hook = getattr(self.module, "aux_loss", None)
        return None if hook is None else hook()

    def _call(self, features: Tensor, states: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if features.shape[0] == 1 and self._single_cell:
            return self._cell_step(features, states)
        if self.has_cell:
            out, (h, c) = self.module(features, states)
            return out, (h, c)
        out, h = self.module(features, states[0])
        return out, (h, states[1])

    def _cell_step(self, features: Tensor, states: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step of a one-layer ``nn.LSTM``/``nn.GRU`` through ``torch.lstm_cell``/``gru_cell``.

        Same weights and math as the module's own call, at about half its per-call cost on CPU
        (acting steps a batch of ``n_envs`` observations once per environment step).

        :param features: ``(1, N, F)``; ``states``: ``(h, c)`` each ``(1, N, hidden_size)``.
        """
        m = self.module
        weights = [m.weight_ih_l0, m.weight_hh_l0]
        if m.bias:
            weights += [m.bias_ih_l0, m.bias_hh_l0]
        if self.has_cell:
            h, c = torch.lstm_cell(features[0], (states[0][0], states[1][0]), *weights)
            return h.unsqueeze(0), (h.unsqueeze(0), c.unsqueeze(0))
        h = torch.gru_cell(features[0], states[0][0], *weights)
        return h.unsqueeze(0), (h.unsqueeze(0), states[1])
