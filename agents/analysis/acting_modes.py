"""How a trained policy acts under each way of acting: its actions greedy or sampled, its selection noise off or on.

The tables score every policy with greedy actions and the selection without noise (evaluation mode). Training
rollouts act otherwise: actions are sampled from the policy, and a core with noisy top-k (``selection_noise``) draws
its selection noise (:func:`rims.remedies.acting_noise`). A policy that solves the levels while it trains can
still fail the tables' evaluation when it depends on either. This module plays one condition under each
combination, so the gap between the rollout return and the evaluation can be split between the two.

Modes (:data:`MODES`): ``actions`` is ``greedy`` (``deterministic=True``) or ``sampled``; ``selection`` is
``plain`` (evaluation mode, no noise) or ``noisy`` (the noise the rollouts act with; only for a core with
``selection_noise > 0``). ``greedy/plain`` is what the tables report; ``sampled/noisy`` (or ``sampled/plain``
without noise) is how the training rollouts act.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from agents.analysis.reproduce.report import md_table, number_cell
from agents.experiment.evaluation import run_episodes, summarize
from envs.splits import Condition
from rims.remedies import acting_noise

ACTIONS = ("greedy", "sampled")
SELECTIONS = ("plain", "noisy")
MODES: tuple[tuple[str, str], ...] = tuple((a, s) for s in SELECTIONS for a in ACTIONS)
"""Every ``(actions, selection)`` pair, the tables' own mode first."""


def noise_scale(model: Any) -> float:
    """The largest ``selection_noise`` of the RIM layers in ``model.policy`` (0.0 without any)."""
    scales = [float(getattr(m, "selection_noise", 0.0) or 0.0) for m in model.policy.modules()]
    return max(scales, default=0.0)


@contextlib.contextmanager
def _selection(model: Any, selection: str) -> Iterator[None]:
    """Within the block the policy acts with the given selection (``noisy``: its training noise drawn)."""
    if selection == "plain":
        yield
        return
    with acting_noise(model.policy):
        yield


def modes_for(model: Any) -> list[tuple[str, str]]:
    """The modes that differ for ``model``: the ``noisy`` ones only when its core has selection noise."""
    return [m for m in MODES if m[1] == "plain" or noise_scale(model) > 0]


def play_modes(model: Any, condition: Condition, episodes: int, n_envs: int = 32, seed: int = 0) -> list[dict]:
    """Play ``episodes`` levels of ``condition`` in every mode of :func:`modes_for`.

    Each mode starts from ``torch.manual_seed(seed)``, so sampled actions and noise draws repeat.

    :returns: one row per mode: ``actions``, ``selection``, ``episodes``, ``mean_return``, ``mean_success`` and,
        for a RIM core, ``switch_rate`` and ``min_frequency`` / ``max_frequency`` (the least and most active unit's
        share of the steps), else ``None``.
    """
    rows = []
    for actions, selection in modes_for(model):
        torch.manual_seed(seed)
        with _selection(model, selection):
            played = run_episodes(model, condition, episodes, deterministic=actions == "greedy", n_envs=n_envs)
        stats = summarize(played)
        chosen = played.selection or {}
        freqs = [v for k, v in sorted(chosen.items()) if k.startswith("freq_u")]
        rows.append(
            {
                "actions": actions,
                "selection": selection,
                "episodes": len(played.returns),
                "mean_return": stats["mean_return"],
                "mean_success": stats["mean_success"],
                "switch_rate": chosen.get("switch_rate"),
                "min_frequency": float(np.min(freqs)) if freqs else None,
                "max_frequency": float(np.max(freqs)) if freqs else None,
            }
        )
    return rows


FIELDS = ("run", "model", "seed", "condition", "actions", "selection", "episodes", "mean_return", "mean_success",
          "switch_rate", "min_frequency", "max_frequency")  # fmt: skip
LEARNS = 0.9
"""Success rate at which a seed counts as solving the levels (the modularity bar's rule)."""


def _row_of(rows: list[dict[str, Any]], run: str, actions: str, selection: str) -> dict[str, Any] | None:
    return next((r for r in rows if (r["run"], r["actions"], r["selection"]) == (run, actions, selection)), None)


def training_mode(rows: list[dict[str, Any]], run: str) -> dict[str, Any] | None:
    """The row of ``run`` played as its training rollouts act: sampled actions, with the noise when it has any."""
    return _row_of(rows, run, "sampled", "noisy") or _row_of(rows, run, "sampled", "plain")


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per model: seeds that solve the levels greedily (the tables' mode) and as the rollouts act, and the switch
    rates in both."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        runs = list(dict.fromkeys(r["run"] for r in rows if r["model"] == model))
        greedy = [r for r in (_row_of(rows, run, "greedy", "plain") for run in runs) if r is not None]
        acting = [r for r in (training_mode(rows, run) for run in runs) if r is not None]
        solved_greedy = sum(r["mean_success"] >= LEARNS for r in greedy)
        solved_acting = sum(r["mean_success"] >= LEARNS for r in acting)
        switch = [r["switch_rate"] for r in greedy if r["switch_rate"] is not None]
        switch_acting = [r["switch_rate"] for r in acting if r["switch_rate"] is not None]
        seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
        text = (
            f"- `{model}` ({seeds}): success >= {LEARNS} with greedy actions and the plain selection (the "
            f"tables' mode) in {solved_greedy}, as the training rollouts act in {solved_acting}"
        )
        success = np.mean([r["mean_success"] for r in greedy])
        success_acting = np.mean([r["mean_success"] for r in acting])
        text += f"; mean success {success:.3f} greedy, {success_acting:.3f} as the rollouts act"
        if switch and switch_acting:
            text += f"; mean switch rate {np.mean(switch):.3f} greedy, {np.mean(switch_acting):.3f} as the rollouts act"
        lines.append(text + ".")
    return lines


def render_report(rows: list[dict[str, Any]], command: str, condition: str, episodes: int) -> str:
    """``report.md`` of an acting-modes record."""
    table = [
        [f"`{r['model']}`", str(r["seed"]), r["actions"], r["selection"], number_cell(r["mean_return"]),
         number_cell(r["mean_success"], 2), number_cell(r["switch_rate"]),
         "-" if r["min_frequency"] is None else f"{r['min_frequency']:.2f}-{r['max_frequency']:.2f}"]
        for r in rows
    ]  # fmt: skip
    header = ["model", "seed", "actions", "selection", "return", "success", "switch rate", "least-most active unit"]
    lines = [
        "# How each policy acts under each way of acting",
        f"Command: `{command}`",
        f"Every policy plays the first {episodes} levels of `{condition}` in each mode "
        "(`agents/analysis/acting_modes.py`): actions greedy (the tables' evaluation) or sampled (as in the training "
        "rollouts); selection plain (evaluation mode) or noisy (the selection noise the rollouts act with; only "
        "models with `selection_noise`). Each mode starts from the same torch seed.",
        "## Per model",
        "\n".join(summary_lines(rows)),
        "## Every seed",
        md_table(header, table),
    ]
    return "\n\n".join(lines) + "\n"
