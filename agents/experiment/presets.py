"""Hyperparameters used for MiniGrid by the learning-check and benchmark scripts."""

from __future__ import annotations

from typing import Any

from agents.cores import DEFAULT_HIDDEN_SIZE, RIM_DEFAULTS

RIM_CORE: dict[str, Any] = dict(
    hidden_size=DEFAULT_HIDDEN_SIZE, num_units=RIM_DEFAULTS["num_units"], k=RIM_DEFAULTS["k"]
)
LSTM_CORE: dict[str, Any] = dict(hidden_size=DEFAULT_HIDDEN_SIZE)
PPO_MINIGRID: dict[str, Any] = dict(
    n_steps=128, batch_size=256, n_epochs=4, learning_rate=7e-4, gae_lambda=0.95, ent_coef=0.01
)
A2C_MINIGRID: dict[str, Any] = dict(n_steps=5, learning_rate=7e-4, ent_coef=0.01)


def core_kwargs(core: str) -> dict[str, Any]:
    """Default options of a core: RIM sizes for ``rim``/``rim_gru``, width 128 otherwise."""
    return dict(RIM_CORE) if core.startswith("rim") else dict(LSTM_CORE)
