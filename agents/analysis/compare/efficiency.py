"""Sample efficiency: frames until a run's periodic ``iid`` evaluation first reaches a return.

The learning curves (``ood_curves.json``) hold the mean return of the periodic evaluations; a
run reaches ``threshold`` at the first evaluated frame count whose ``iid`` mean return is at
least ``threshold``, and has not reached it when no evaluation does (its frames to the
threshold are then unknown: more than the last evaluated frame count). Per model the table
lists every seed, the median over seeds (a model whose median seed never reached it has no
median), and how many seeds reached it. P(faster) compares a model with a baseline as
P(improvement) does, with frames to the threshold as the score (fewer is better; a seed that
never reached it counts as slower than any seed that did and ties with another that did not),
with a 95% stratified-bootstrap CI over both models' seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .runs import Run
from .stats import IID, _probability_of_improvement
from .tables import _md_table

DEFAULT_THRESHOLD = 0.9


@dataclass(frozen=True)
class Efficiency:
    """Frames to the threshold of one model.

    :param model: the model's label.
    :param seeds: the seeds, in the order of ``frames``.
    :param frames: per seed the first evaluated frame count at or above the threshold, or ``None``.
    :param last_frames: per seed the last evaluated frame count (the budget a ``None`` ran out of).
    """

    model: str
    seeds: list[int]
    frames: list[int | None]
    last_frames: list[int | None]

    @property
    def reached(self) -> int:
        """How many seeds reached the threshold."""
        return sum(f is not None for f in self.frames)

    @property
    def median(self) -> float | None:
        """Median frames over seeds (unreached seeds count as slowest); ``None`` if the median seed did not reach it."""
        scores = sorted(math.inf if f is None else float(f) for f in self.frames)
        if not scores:
            return None
        value = float(np.median(scores))
        return None if math.isinf(value) else value


def frames_to_threshold(run: Run, threshold: float, condition: str = IID) -> tuple[int | None, int | None]:
    """``(first frames with mean return >= threshold, last evaluated frames)`` of ``run`` on ``condition``.

    :returns: ``(None, None)`` for a run without periodic evaluations of the condition.
    """
    curve = run.curves.get(condition, {})
    if not curve:
        return None, None
    hit = next((frames for frames in sorted(curve) if curve[frames] >= threshold), None)
    return hit, max(curve)


def efficiencies(models: dict[str, list[Run]], threshold: float = DEFAULT_THRESHOLD) -> list[Efficiency]:
    """Frames to ``threshold`` for every model that has periodic ``iid`` evaluations."""
    out = []
    for label, runs in models.items():
        pairs = [frames_to_threshold(run, threshold) for run in runs]
        if all(last is None for _, last in pairs):
            continue
        out.append(Efficiency(label, [run.seed for run in runs], [h for h, _ in pairs], [last for _, last in pairs]))
    return out


def _scores(effs: Sequence[Efficiency]) -> list[np.ndarray]:
    """Negated frames per model (higher is better); an unreached seed scores below every reached
    one of any of ``effs``, the same for all of them (two unreached seeds tie)."""
    reached = [f for eff in effs for f in eff.frames if f is not None]
    slowest = -float(max(reached, default=0)) - 1.0
    return [np.array([slowest if f is None else -float(f) for f in eff.frames]) for eff in effs]


def p_faster(
    candidate: Efficiency, baseline: Efficiency, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """P(a random seed of ``candidate`` reaches the threshold sooner than one of ``baseline``), ties half,
    with a 95% bootstrap CI (seeds resampled within each model): ``(point, low, high)``.
    """
    x, y = _scores([candidate, baseline])
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, len(x), size=(reps, len(x)))].T  # (seeds, replications): a replication per column
    ys = y[rng.integers(0, len(y), size=(reps, len(y)))].T
    boot = _probability_of_improvement(xs, ys)
    point = float(_probability_of_improvement(x[:, None], y[:, None])[0])
    return point, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _cell(frames: int | None, last: int | None) -> str:
    if frames is not None:
        return f"{frames:,}"
    return "-" if last is None else f"> {last:,}"


def efficiency_table(
    effs: Sequence[Efficiency], threshold: float, baselines: Sequence[str] = (), reps: int = 2000, seed: int = 0
) -> str:
    """Markdown: per model the frames to ``threshold`` of every seed, the median and the count, and
    P(faster) than each model in ``baselines`` (labels of ``effs``)."""
    by_label = {e.model: e for e in effs}
    header = ["model", "frames per seed (seed: frames)", "median", "reached"]
    bases = [b for b in baselines if b in by_label]
    header += [f"P(faster than {b}) [95% CI]" for b in bases]
    rows = []
    for eff in effs:
        seeds = ", ".join(
            f"{s}: {_cell(f, last)}" for s, f, last in zip(eff.seeds, eff.frames, eff.last_frames, strict=True)
        )
        median = "not reached" if eff.median is None else f"{eff.median:,.0f}"
        row = [eff.model, seeds, median, f"{eff.reached}/{len(eff.frames)}"]
        for base in bases:
            if base == eff.model:
                row.append("")
                continue
            point, low, high = p_faster(eff, by_label[base], reps, seed)
            row.append(f"{point:.2f} [{low:.2f}, {high:.2f}]")
        rows.append(row)
    intro = (
        f"Frames until the periodic `iid` evaluation's mean return first reaches {threshold:g} "
        "(`> N`: not within the N frames evaluated)."
    )
    return intro + "\n\n" + _md_table(header, rows)
