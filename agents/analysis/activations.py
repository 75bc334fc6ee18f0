"""Which RIM units are active, as numbers: per-unit activation frequency, active units per step, switch rate.

Nothing here renders: :func:`play_activations` plays a condition's episodes in parallel
environments (one batched policy step for all of them) and keeps only actions, rewards, the
active-unit masks and the environment factors (:mod:`envs.factors`), and :func:`summarize_activations`
turns those into statistics. ``R`` below is ``num_units`` for a one-layer core, ``num_layers * num_units`` (layer-major)
otherwise; ``T`` is the number of steps of an episode.

A selection counts as *collapsed* when a unit is active in more than 99% or fewer than 1% of the steps,
or the switch rate is near 0; :func:`collapse_reasons` says which of these holds (Goyal et al. 2019,
*Recurrent Independent Mechanisms*, sec. 2: the point of the top-k competition is that different units
handle different inputs). Those reasons do not say *how* it collapsed (one always-on unit counts, while the
others rotate): ``selection_case`` does (``fixed``, ``per-episode`` or ``switching``,
:func:`agents.experiment.selection_stats.selection_case`), with the always-on and never-on units apart. Only
the ``fixed`` case makes the RIM a smaller LSTM in effect.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.analysis.specialisation import specialisation
from agents.experiment import selection_stats as sel
from agents.experiment.atomic import atomic_write_text
from agents.experiment.recording import Recording, is_rim_core, policy_step, zero_state
from agents.policies import RecurrentPolicy
from envs.factors import env_factors, factor_array
from envs.levels import make_condition_env
from envs.splits import Condition, Split

log = logging.getLogger(__name__)

PARALLEL_ENVS = 32
"""Environments an activation statistic plays in parallel by default: one batched policy step serves them all, so a
larger batch costs little more per step than 8 did (about 2x fewer seconds per episode on doorkey's larger rooms)."""

RIM_CORES: tuple[str, ...] = ("rim", "rim_gru")
STATS_STEM = "activation_stats"
ALWAYS_ACTIVE = sel.ALWAYS_ON  # a unit active in more than this fraction of steps counts as always active
NEVER_ACTIVE = sel.NEVER_ON  # ... in fewer than this fraction as never active
MIN_SWITCH_RATE = 0.01  # a switch rate below this counts as a selection that does not change


def active_mask(recording: Recording) -> np.ndarray:
    """The ``(T, num_layers, U)`` bool active mask of ``recording``.

    :raises ValueError: the recording has no mask (a non-RIM core).
    """
    if recording.active_layers is not None:
        return np.asarray(recording.active_layers, dtype=bool)
    if recording.active is not None:
        return np.asarray(recording.active, dtype=bool)[:, None, :]
    raise ValueError(f"the recording of {recording.condition!r} has no active-unit mask (not a RIM core)")


def unit_labels(num_layers: int, num_units: int) -> list[str]:
    """Unit labels: ``u0, u1, ...``, or ``l0u0, l0u1, ...`` for several layers."""
    if num_layers == 1:
        return [f"u{u}" for u in range(num_units)]
    return [f"l{layer}u{u}" for layer in range(num_layers) for u in range(num_units)]


def summarize_activations(recordings: Sequence[Recording]) -> dict[str, Any]:
    """Activation statistics over recorded RIM episodes (of one condition).

    :returns: ``condition``, ``episodes``, ``steps`` (total), ``mean_return``, ``mean_success``
        (share of episodes with positive return), ``mean_length``, ``num_layers``,
        ``num_units``, ``units`` (``R`` labels), ``unit_frequency`` (``R`` fractions of steps
        each unit was active; they sum to ``k * num_layers``), ``mean_active`` (active units
        per step and layer: ``k``) and ``switch_rate`` (fraction of units whose active flag
        changed between consecutive steps, pooled over all step pairs; 0 if no episode has
        two steps); for the models after RIMs also ``write_frequency`` (``R`` fractions of steps
        each unit wrote into the shared workspace) and ``schema_frequency`` (``R`` lists: the
        fraction of a unit's active steps that used each schema); when the recordings hold environment factors
        (:mod:`envs.factors`), ``factor_mean`` and ``specialisation`` (:mod:`agents.analysis.specialisation`).
    :raises ValueError: no recordings, one without an active-unit mask, or masks of different widths.
    """
    if not recordings:
        raise ValueError("summarize_activations needs at least one recording")
    masks = [active_mask(r) for r in recordings]  # each (T, num_layers, U)
    widths = {m.shape[1:] for m in masks}
    if len(widths) != 1:
        raise ValueError(f"recordings have different (num_layers, num_units): {sorted(widths)}")
    num_layers, num_units = masks[0].shape[1:]
    stacked = np.concatenate(masks)  # (steps, num_layers, U)
    returns = [r.total_return for r in recordings]
    return {
        "condition": recordings[0].condition,
        "episodes": len(recordings),
        "steps": len(stacked),
        "mean_return": float(np.mean(returns)),
        "mean_success": float(np.mean([ret > 0 for ret in returns])),
        "mean_length": len(stacked) / len(recordings),
        "num_layers": int(num_layers),
        "num_units": int(num_units),
        "units": unit_labels(num_layers, num_units),
        "unit_frequency": [float(f) for f in stacked.mean(axis=0).reshape(-1)],
        "mean_active": float(stacked.sum(axis=2).mean()),
        **_selection_statistics(stacked, [len(m) for m in masks], unit_labels(num_layers, num_units)),
        **_choice_statistics(recordings),
        **_factor_statistics(recordings, stacked, unit_labels(num_layers, num_units)),
    }


def _factor_statistics(recordings: Sequence[Recording], stacked: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """``factor_mean`` (``{factor: mean value}``) and ``specialisation``
    (:func:`agents.analysis.specialisation.specialisation` rows) when every recording has its factors.

    :param stacked: ``(steps, num_layers, U)`` bool, the recordings' masks laid end to end.
    """
    if not all(r.factors for r in recordings):
        return {}
    names = list(recordings[0].factors)
    factors = {name: np.concatenate([r.factors[name] for r in recordings]) for name in names}  # each (steps,)
    flat = stacked.reshape(len(stacked), -1)  # (steps, R)
    return {
        "factor_mean": {name: float(values.mean()) for name, values in factors.items()},
        "specialisation": specialisation(flat, factors, [r.length for r in recordings], labels),
    }


def _selection_statistics(stacked: np.ndarray, lengths: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """The :mod:`agents.experiment.selection_stats` of episodes laid end to end.

    :param stacked: ``(steps, num_layers, U)`` bool, the episodes one after the other.
    :param lengths: the episodes' lengths (summing to ``steps``).
    """
    flat = stacked.reshape(len(stacked), -1)  # (S, R)
    starts = np.zeros(len(flat), dtype=bool)
    starts[np.cumsum([0, *lengths[:-1]])[np.asarray(lengths) > 0]] = True
    codes = sel.set_codes(flat)  # (S,)
    overall, within = sel.held_shares(codes, np.cumsum(starts), starts)
    frequency = sel.unit_frequency(flat)
    always, never = sel.always_never(frequency)
    return {
        "switch_rate": sel.switch_rate(flat[:, None], starts[:, None]),
        "usage_entropy": sel.usage_entropy(frequency),
        "collapse": sel.collapse_metric(frequency, round(float(flat.sum(axis=1).mean()))),
        "distinct_sets": sel.distinct_sets(codes),
        "modal_share": overall,
        "episode_share": within,
        "selection_case": sel.selection_case(overall, within),
        "always_on": [labels[i] for i in always],
        "never_on": [labels[i] for i in never],
    }


def _choice_statistics(recordings: Sequence[Recording]) -> dict[str, Any]:
    """``write_frequency`` and ``schema_frequency`` of :func:`summarize_activations`, when recorded."""
    found: dict[str, Any] = {}
    if all("workspace_writes" in r.choices for r in recordings):
        writes = np.concatenate([r.choices["workspace_writes"] for r in recordings])  # (steps, Ly, U)
        found["write_frequency"] = [float(f) for f in writes.mean(axis=0).reshape(-1)]
    if all("schema" in r.choices for r in recordings):
        schema = np.concatenate([r.choices["schema"] for r in recordings])  # (steps, Ly, U)
        schema = schema.reshape(schema.shape[0], -1)  # (steps, R)
        count = int(schema.max()) + 1 if schema.size else 0
        found["schema_frequency"] = [
            [float(np.mean(column[column >= 0] == s)) if np.any(column >= 0) else 0.0 for s in range(count)]
            for column in schema.T
        ]
    return found


class _Slot:
    """One of the parallel environments of :func:`play_activations` and the episode it is playing."""

    def __init__(self, condition: Condition, first: int, stride: int, quota: int) -> None:
        self.env = make_condition_env(condition, sequential=True, first=first, stride=stride, monitor=False)
        self.first, self.stride, self.quota, self.done = first, stride, quota, 0
        self.obs, info = self.env.reset()
        self.level_seed = int(info["level_seed"])
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.masks: list[np.ndarray] = []
        self.choices: dict[str, list[np.ndarray]] = {}
        self.factors: list[dict[str, int]] = []

    @property
    def live(self) -> bool:
        """Whether this slot still has episodes to play."""
        return self.done < self.quota

    @property
    def episode(self) -> int:
        """Index of the episode being played within the condition (its level is ``seeds.start + episode``)."""
        return self.first + self.done * self.stride

    def finish(self, name: str, terminated: bool) -> Recording:
        """The recording of the episode that just ended; the next episode starts if any is left."""
        recording = Recording(
            condition=name,
            level_seed=self.level_seed,
            frames=[],
            actions=np.asarray(self.actions, dtype=np.int64),
            rewards=np.asarray(self.rewards, dtype=np.float64),
            active=np.stack(self.masks)[:, 0] if self.masks else None,
            active_layers=np.stack(self.masks) if self.masks else None,
            terminated=terminated,
            choices={key: np.stack(values) for key, values in self.choices.items()},
            factors=factor_array(self.factors) if self.factors else {},
        )
        self.done += 1
        self.actions, self.rewards, self.masks, self.choices, self.factors = [], [], [], {}, []
        if self.live:
            self.obs, info = self.env.reset()
            self.level_seed = int(info["level_seed"])
        return recording


def play_activations(
    model: BaseAlgorithm,
    condition: Condition,
    episodes: int,
    deterministic: bool = True,
    max_steps: int | None = None,
    n_envs: int = PARALLEL_ENVS,
    progress: Any = None,
) -> list[Recording]:
    """Play level seeds ``0 .. episodes - 1`` of ``condition`` in ``n_envs`` parallel environments, without frames.

    Environment ``j`` plays the episodes ``j, j + n_envs, ...`` (as :func:`agents.experiment.evaluation.run_episodes`
    does); the policy acts for all environments in one batched step (:func:`agents.experiment.recording.policy_step`),
    so episode ``i`` is the episode ``record_episode(model, condition, i, render=False)`` plays, up to
    floating-point rounding of the batched products.

    :param max_steps: cut each episode after this many steps (default: play it out).
    :param progress: optional object with ``update(n)`` (e.g. a tqdm bar), called once per finished episode.
    :returns: one recording per episode (no frames), in episode order.
    :raises ValueError: a model without a :class:`agents.RecurrentPolicy`, ``episodes < 1``,
        ``n_envs < 1`` or ``max_steps < 1``.
    """
    policy = model.policy
    if not isinstance(policy, RecurrentPolicy):
        raise ValueError(f"play_activations needs a model with a RecurrentPolicy, got {type(policy).__name__}")
    for name, value in (("episodes", episodes), ("n_envs", n_envs), ("max_steps", max_steps or 1)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    n = min(n_envs, episodes)
    slots = [_Slot(condition, j, n, len(range(j, episodes, n))) for j in range(n)]
    found: dict[int, Recording] = {}
    states = zero_state(policy, n)
    starts = np.ones(n, dtype=bool)
    policy.set_training_mode(False)
    try:
        with torch.no_grad():
            while any(slot.live for slot in slots):
                obs = np.stack([slot.obs for slot in slots])  # (n, *obs_shape)
                actions, states, active, chosen = policy_step(policy, obs, states, starts, deterministic)
                for j, slot in enumerate(slots):
                    if not slot.live:
                        continue
                    slot.factors.append(env_factors(slot.env))
                    slot.obs, reward, terminated, truncated, _ = slot.env.step(int(actions[j]))
                    slot.actions.append(int(actions[j]))
                    slot.rewards.append(float(reward))
                    if active is not None:
                        slot.masks.append(active[:, j])  # (num_layers, U)
                    for key, value in chosen.items():
                        slot.choices.setdefault(key, []).append(value[:, j])
                    starts[j] = terminated or truncated or (max_steps is not None and len(slot.actions) >= max_steps)
                    if starts[j]:
                        episode = slot.episode
                        found[episode] = slot.finish(condition.name, bool(terminated))
                        if progress is not None:
                            progress.update(1)
    finally:
        for slot in slots:
            slot.env.close()
    return [found[i] for i in range(episodes)]


def activation_stats(
    model: BaseAlgorithm,
    condition: Condition,
    episodes: int = 10,
    deterministic: bool = True,
    max_steps: int | None = None,
    n_envs: int = PARALLEL_ENVS,
    progress: Any = None,
) -> dict[str, Any]:
    """Play the first ``episodes`` level seeds of ``condition`` (no rendering) and summarise the active units.

    :param model: a trained RIM-core :class:`agents.RecurrentPPO` / :class:`agents.RecurrentA2C`.
    :param progress: see :func:`play_activations`.
    :returns: see :func:`summarize_activations`, plus ``max_steps``.
    :raises ValueError: a non-RIM core or ``episodes < 1``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not is_rim_core(model.policy.core):
        raise ValueError(f"activation_stats needs a RIM core, got {model.policy.core_name!r}")
    recordings = play_activations(model, condition, episodes, deterministic, max_steps, n_envs, progress)
    return {**summarize_activations(recordings), "max_steps": max_steps}


def collapse_reasons(stats: dict[str, Any]) -> list[str]:
    """Why the selection of one condition's statistics counts as collapsed; empty if it does not.

    A unit active in more than :data:`ALWAYS_ACTIVE` or fewer than :data:`NEVER_ACTIVE` of the
    steps, or a switch rate below :data:`MIN_SWITCH_RATE`.
    """
    pairs = list(zip(stats["units"], stats["unit_frequency"], strict=True))
    always = [unit for unit, freq in pairs if freq > ALWAYS_ACTIVE]
    never = [unit for unit, freq in pairs if freq < NEVER_ACTIVE]
    reasons = []
    if always:
        reasons.append(f"always active: {', '.join(always)}")
    if never:
        reasons.append(f"never active: {', '.join(never)}")
    if stats["switch_rate"] < MIN_SWITCH_RATE:
        reasons.append(f"switch rate {stats['switch_rate']:.4f} < {MIN_SWITCH_RATE}")
    return reasons


def check_conditions(split: Split, conditions: Sequence[str] | None) -> list[str]:
    """The condition names to play (default: all of the split's test conditions), checked against the split's
    conditions (``validation`` included).

    :raises ValueError: an empty list or an unknown name (listing the valid ones).
    """
    names = list(split.test) if conditions is None else list(conditions)
    if not names:
        raise ValueError("no conditions to visualise")
    unknown = [name for name in names if name not in split.evaluable]
    if unknown:
        raise ValueError(f"split {split.name!r} has no condition(s) {unknown}; valid: {list(split.evaluable)}")
    return names


NESTED = ("specialisation", "factor_mean")  # keys of a condition's statistics that the flat CSV row leaves out


def _stats_row(stats: dict[str, Any]) -> dict[str, Any]:
    """One flat CSV row: scalar statistics (unit lists joined by spaces), then one ``freq_<unit>`` column per unit."""
    row = {key: value for key, value in stats.items() if key not in ("units", "unit_frequency", *NESTED)}
    row.update({key: " ".join(stats[key]) for key in ("always_on", "never_on") if key in stats})
    row.update({f"freq_{u}": f for u, f in zip(stats["units"], stats["unit_frequency"], strict=True)})
    return row


def format_stats_table(stats: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarize_activations` results, one row per condition."""
    units = list(stats[0]["units"]) if stats else []
    header = ["condition", "episodes", "return", "success", "mean active", "switch rate", "case", *units]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in stats:
        cells = [
            s["condition"],
            str(s["episodes"]),
            f"{s['mean_return']:.3f}",
            f"{s['mean_success']:.2f}",
            f"{s['mean_active']:.2f}",
            f"{s['switch_rate']:.3f}",
            s.get("selection_case", "-"),
            *(f"{f:.2f}" for f in s["unit_frequency"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_activation_stats(stats: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``activation_stats.json``, ``.csv`` (``freq_<unit>`` columns) and ``.md`` into ``out_dir``.

    :param stats: :func:`summarize_activations` results, one per condition.
    :returns: the three paths.
    """
    if not stats:
        raise ValueError("write_activation_stats needs at least one condition's statistics")
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    rows = [_stats_row(s) for s in stats]
    fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    texts = {
        directory / f"{STATS_STEM}.json": json.dumps(list(stats), indent=2),
        directory / f"{STATS_STEM}.csv": buffer.getvalue(),
        directory / f"{STATS_STEM}.md": format_stats_table(stats) + "\n",
    }
    for path, text in texts.items():
        atomic_write_text(path, text)
    return list(texts)
