"""The selection during training, per seed, from a table's record (``training.csv`` beside ``curves.csv``).

The final statistics say where a seed's selection ended; these say how it got there: the switch rate of the
training rollouts at the start, half way and at the end, whether and when it froze
(:func:`agents.experiment.selection_stats.frozen_from`), and when the periodic iid evaluation first reached a
return that only a policy that solves most levels gets. Seeds recorded before ``training.csv`` existed have
no rows and are listed as not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.experiment.selection_stats import FREEZE_MIN_UPDATES, FREEZE_SWITCH, frozen_from

from .report import md_table, number_cell
from .seed_store import SeedStore

LEARNED_RETURN = 0.8
"""A periodic iid mean return at or above this counts as solved (on DoorKey a success earns ``1 - 0.9 t / T``, so
it needs most episodes solved; the bar's success rate 0.9 is only known at the final evaluation)."""
IID = "iid"


def _series(view: SeedStore, model: str, seed: int, statistic: str) -> tuple[list[int], list[float]]:
    """``(frames, values)`` of one training statistic of one seed, in frame order (empty when not recorded)."""
    points = sorted(
        (int(r["frames"]), float(r["value"]))
        for r in view.training
        if r["model"] == model and int(r["seed"]) == seed and r["statistic"] == statistic
    )
    return [f for f, _ in points], [v for _, v in points]


def _at_half(frames: Sequence[int], values: Sequence[float]) -> float:
    """The value of the logged update nearest half of the last frame count."""
    index = int(np.argmin(np.abs(np.asarray(frames) - frames[-1] / 2)))
    return float(values[index])


def _first_learned(view: SeedStore, model: str, seed: int) -> int | None:
    """The first periodic evaluation's frame count whose iid mean return is at least :data:`LEARNED_RETURN`."""
    curve = sorted(
        (int(r["frames"]), float(r["mean_return"]))
        for r in view.curves
        if r["model"] == model and int(r["seed"]) == seed and r["condition"] == IID
    )
    return next((f for f, v in curve if v >= LEARNED_RETURN), None)


def training_rows(view: SeedStore, models: Sequence[str]) -> list[dict[str, Any]]:
    """One row per seed of each model with a training record: the rollout selection over training.

    :returns: rows with ``model``, ``seed``, ``iid_success`` (final), ``switch_first``, ``switch_half``,
        ``switch_last`` (mean of the last tenth of the logged updates), ``entropy_last`` (likewise),
        ``frozen_from`` (frames, or ``None``), ``learned_at`` (frames, or ``None``) and ``updates`` logged.
    """
    rows = []
    for model in models:
        for seed in view.seeds(model):
            frames, switch = _series(view, model, seed, "switch_rate")
            if not frames:
                continue
            _, entropy = _series(view, model, seed, "usage_entropy")
            tail = max(1, len(switch) // 10)
            success = [float(r["success"]) for r in view.scores
                       if r["model"] == model and int(r["seed"]) == seed and r["condition"] == IID]  # fmt: skip
            rows.append(
                {
                    "model": model,
                    "seed": seed,
                    "iid_success": success[0] if success else None,
                    "switch_first": switch[0],
                    "switch_half": _at_half(frames, switch),
                    "switch_last": float(np.mean(switch[-tail:])),
                    "entropy_last": float(np.mean(entropy[-tail:])) if entropy else None,
                    "frozen_from": frozen_from(frames, switch),
                    "learned_at": _first_learned(view, model, seed),
                    "updates": len(frames),
                }
            )
    return rows


def _frames(value: int | None, never: str) -> str:
    return never if value is None else f"{value:,}"


def training_section(rows: Sequence[dict[str, Any]], models: Sequence[str]) -> str:
    """Markdown: a line per model (how many seeds froze, and when) and the table of every seed."""
    lines = []
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            lines.append(f"- `{model}`: not recorded (its seeds were harvested before `training.csv` existed).")
            continue
        frozen = [r["frozen_from"] for r in mine if r["frozen_from"] is not None]
        learned = [r for r in mine if r["learned_at"] is not None]
        last = np.array([r["switch_last"] for r in mine])
        lines.append(
            f"- `{model}`: rollout selection froze in {len(frozen)}/{len(mine)} seeds"
            + (f" (from {', '.join(f'{f:,}' for f in sorted(frozen))} frames)" if frozen else "")
            + f"; final rollout switch rate median {np.median(last):.3f} (range {last.min():.3f}-{last.max():.3f});"
            f" periodic iid return reached {LEARNED_RETURN} in {len(learned)}/{len(mine)} seeds."
        )
    header = ["model", "seed", "final iid success", "rollout switch rate: first", "half way", "last tenth",
              "usage entropy, last tenth", "frozen from (frames)",
              f"iid return >= {LEARNED_RETURN} at (frames)"]  # fmt: skip
    table = [
        [f"`{r['model']}`", str(r["seed"]), number_cell(r["iid_success"], 2), number_cell(r["switch_first"]),
         number_cell(r["switch_half"]), number_cell(r["switch_last"]), number_cell(r["entropy_last"]),
         _frames(r["frozen_from"], "never"), _frames(r["learned_at"], "not reached")]
        for r in rows
    ]  # fmt: skip
    return (
        "The selection of the training rollouts over training (`training.csv`, at most 50 logged updates per seed): "
        f"its within-episode switch rate; *frozen from*: the first logged update from which the switch rate stays "
        f"below {FREEZE_SWITCH} to the end, over at least {FREEZE_MIN_UPDATES} logged updates. The periodic iid "
        "evaluation (`curves.csv`) says when the policy solved the training levels.\n\n"
        + "\n".join(lines)
        + ("\n\n" + md_table(header, table) if table else "")
    )
