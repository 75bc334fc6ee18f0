"""Out-of-distribution evaluation of recurrent agents on a split's test conditions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.experiment.atomic import atomic_write_text, write_csv
from agents.experiment.selection_log import EvalMasks
from envs.levels import make_condition_vec_env
from envs.splits import Condition, Split

MODES: tuple[str, ...] = ("deterministic", "sampled")


@dataclass
class Episodes:
    """Per-episode results of one condition, ordered by level seed."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    level_seeds: list[int] = field(default_factory=list)
    selection: dict[str, float] = field(default_factory=dict)

    @property
    def successes(self) -> list[float]:
        """MiniGrid pays a positive reward only on reaching the goal."""
        return [float(r > 0) for r in self.returns]


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (n_boot, data.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def run_episodes(
    model: BaseAlgorithm, condition: Condition, episodes: int, deterministic: bool, n_envs: int = 8, seed: int = 0
) -> Episodes:
    """Play the first ``episodes`` level seeds of ``condition`` with ``model`` (recurrent or not).

    Copy ``j`` of the ``n_envs`` parallel environments plays seeds ``j, j + n_envs, ...``;
    each stops counting once its share is done, so the result covers exactly the seeds
    ``condition.seeds.start .. + episodes - 1`` whatever ``n_envs`` is. For a RIM core, ``selection`` holds
    the selection statistics of those episodes (:class:`agents.experiment.selection_log.EvalMasks`).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n_envs = min(n_envs, episodes)
    quota = [len(range(j, episodes, n_envs)) for j in range(n_envs)]
    env = make_condition_vec_env(condition, n_envs, seed=seed, sequential=True)
    done_per_env = [0] * n_envs
    found: dict[int, tuple[float, int]] = {}
    obs = env.reset()
    state = None
    starts = np.ones(n_envs, dtype=bool)
    seeds = [condition.seeds.start + j for j in range(n_envs)]
    masks = EvalMasks(model.policy)
    while any(d < q for d, q in zip(done_per_env, quota, strict=True)):
        previous = state
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        masks.add(previous, state, starts, np.less(done_per_env, quota))
        obs, _, dones, infos = env.step(actions)
        for j, (done, info) in enumerate(zip(dones, infos, strict=True)):
            if done and done_per_env[j] < quota[j]:
                found[seeds[j]] = (float(info["episode"]["r"]), int(info["episode"]["l"]))
                done_per_env[j] += 1
            if done:
                seeds[j] += n_envs
        starts = dones
    env.close()
    result = Episodes()
    for level_seed in sorted(found):
        result.returns.append(found[level_seed][0])
        result.lengths.append(found[level_seed][1])
        result.level_seeds.append(level_seed)
    result.selection = masks.summary()
    return result


def summarize(episodes: Episodes) -> dict[str, float]:
    """Means with 95% bootstrap confidence intervals of return, success and length."""
    row: dict[str, float] = {"episodes": len(episodes.returns)}
    for key, values in (
        ("return", episodes.returns),
        ("success", episodes.successes),
        ("length", [float(v) for v in episodes.lengths]),
    ):
        low, high = bootstrap_ci(values)
        row[f"mean_{key}"] = float(np.mean(values))
        row[f"{key}_ci_low"], row[f"{key}_ci_high"] = low, high
    return row


def evaluate_split(
    model: BaseAlgorithm,
    split: Split,
    conditions: Iterable[str] | None = None,
    episodes: int = 100,
    modes: Iterable[str] = MODES,
    n_envs: int = 8,
    progress: Any = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One summary row per test condition and action mode.

    :param conditions: names to evaluate (default: all of the split's test conditions).
    :param modes: ``deterministic`` and/or ``sampled`` actions.
    :param progress: optional object with ``update(n)`` (e.g. a tqdm bar), called per condition.
    :param seed: torch seed set before each condition and mode, so sampled actions repeat
        whatever else ran before.
    """
    names = list(split.test) if conditions is None else list(conditions)
    modes = list(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown evaluation modes {unknown}; valid: {list(MODES)}")
    rows = []
    for name in names:
        condition = split.condition(name)
        for mode in modes:
            torch.manual_seed(seed)
            played = run_episodes(model, condition, episodes, deterministic=mode == "deterministic", n_envs=n_envs)
            rows.append({"split": split.name, "condition": name, "mode": mode, **summarize(played)})
            if progress is not None:
                progress.update(1)
    return rows


def write_results(rows: list[dict[str, Any]], directory: Path, stem: str = "eval") -> tuple[Path, Path]:
    """Write ``rows`` as ``<stem>.json`` and ``<stem>.csv`` in ``directory`` (atomically); the CSV's columns
    are every key of any row, in first-seen order."""
    json_path, csv_path = directory / f"{stem}.json", directory / f"{stem}.csv"
    atomic_write_text(json_path, json.dumps(rows, indent=2))
    write_csv(csv_path, rows, list(dict.fromkeys(key for row in rows for key in row)))
    return json_path, csv_path


def format_table(rows: list[dict[str, Any]]) -> str:
    """A readable fixed-width table of summary rows."""
    lines = [
        f"{'run':16s} {'condition':22s} {'mode':13s} {'return [95% CI]':24s} {'success [95% CI]':24s} {'length':>7s}"
    ]
    for r in rows:
        ret = f"{r['mean_return']:.3f} [{r['return_ci_low']:.3f}, {r['return_ci_high']:.3f}]"
        suc = f"{r['mean_success']:.2f} [{r['success_ci_low']:.2f}, {r['success_ci_high']:.2f}]"
        lines.append(
            f"{r.get('run', '')!s:16s} {r['condition']:22s} {r['mode']:13s} {ret:24s} {suc:24s} {r['mean_length']:7.1f}"
        )
    return "\n".join(lines)


class OODEvalCallback(BaseCallback):
    """Every ``every_frames`` frames, evaluate a few episodes per test condition (deterministic)
    and log ``ood/<condition>/mean_return`` and ``ood/<condition>/success`` to the SB3 logger; for a RIM
    core also the selection statistics of those episodes as ``sel/<condition>/<statistic>``
    (:func:`agents.experiment.selection_stats.selection_summary`).

    ``history`` keeps one row per evaluation and condition (frames, condition, numbers, and the selection
    statistics as ``sel_<statistic>``), so learning curves per condition exist even without a logger backend.
    """

    def __init__(
        self,
        split: Split,
        every_frames: int,
        episodes: int = 10,
        conditions: Iterable[str] | None = None,
        n_envs: int = 4,
    ) -> None:
        super().__init__()
        if every_frames < 1:
            raise ValueError(f"every_frames must be >= 1, got {every_frames}")
        self.split, self.every_frames, self.episodes, self.n_envs = split, every_frames, episodes, n_envs
        self.conditions = list(split.test) if conditions is None else [split.condition(c).name for c in conditions]
        self.history: list[dict[str, Any]] = []
        self._next = every_frames

    def state(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue the curves (see :meth:`load_state`)."""
        return {"history": list(self.history), "next": self._next}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of an earlier run."""
        self.history, self._next = list(state["history"]), int(state["next"])

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every_frames
            for name in self.conditions:
                played = run_episodes(self.model, self.split.condition(name), self.episodes, True, self.n_envs)
                row = {"frames": self.num_timesteps, "condition": name, **summarize(played)}
                row.update({f"sel_{key}": value for key, value in played.selection.items()})
                self.history.append(row)
                self.logger.record(f"ood/{name}/mean_return", row["mean_return"])
                self.logger.record(f"ood/{name}/success", row["mean_success"])
                for key, value in played.selection.items():
                    self.logger.record(f"sel/{name}/{key}", value)
        return True
