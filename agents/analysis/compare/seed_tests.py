"""Tests and intervals over whole seeds: the rule behind every verdict of a comparison.

A trained seed is the independent unit of a comparison: every test condition of a seed is scored by
the same policy, so a seed's conditions are correlated and must be resampled together. Scores are
``(seeds, conditions)`` matrices, one per model.

- :func:`pooled_improvement` is P(X > Y) averaged over conditions (rliable's multi-task probability of
  improvement); with one condition it is the Mann-Whitney statistic ``U / (n_x n_y)``.
- :func:`seed_bootstrap_improvement` and :func:`seed_bootstrap_iqm` resample whole seeds (rows), never
  conditions independently.
- :func:`permutation_p` is the two-sided permutation test of :func:`pooled_improvement`: the rows of both
  models are pooled and every split into groups of the original sizes is enumerated (exactly when there are
  at most ``max_exact`` splits, else ``draws`` random splits with the ``(b + 1) / (m + 1)`` estimate, which
  keeps the test valid). Under the null hypothesis that both models' seeds come from one distribution
  (exchangeable rows) its false-verdict rate is at most the level, ties included.
- :func:`split_improvements` and :func:`split_p_values` give the statistic and the exact p-value of every split
  at once (what :func:`~agents.analysis.compare.error_rates.exact_split_false_verdict_rate` counts).
- :func:`holm` adjusts a family of p-values (Holm 1979, step-down).
- :func:`verdict` turns a P(X > Y) and its (adjusted) p-value into ``better`` / ``worse`` /
  ``no difference at 95%``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.stats import rankdata

ALPHA = 0.05
MAX_EXACT = 200_000  # splits enumerated exactly (C(20, 10) = 184,756: 10 vs 10 seeds is exact)
DRAWS = 9_999  # random splits beyond that
TOLERANCE = 1e-9  # statistics this close count as equal (float rank sums)
BETTER, SAME, WORSE = "better", "no difference at 95%", "worse"


def _as_matrix(scores: np.ndarray | Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """``scores`` as a float ``(seeds, conditions)`` matrix (a 1-D input is one condition)."""
    array = np.asarray(scores, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"scores must be (seeds, conditions) with at least one of each, got shape {array.shape}")
    return array


def improvement_per_condition(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 per condition (rliable's probability of improvement, its Mann-Whitney U divided
    by ``n_x n_y``), for any leading batch dimensions.

    :param x: ``(..., n_x, C)`` scores of the candidate; ``y``: ``(..., n_y, C)`` of the baseline.
    :returns: ``(..., C)``.
    """
    diff = x[..., :, None, :] - y[..., None, :, :]  # (..., n_x, n_y, C)
    return (diff > 0).mean(axis=(-3, -2)) + 0.5 * (diff == 0).mean(axis=(-3, -2))


def pooled_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """:func:`improvement_per_condition` averaged over the conditions.

    :param x: ``(n_x, C)`` scores of the candidate; ``y``: ``(n_y, C)`` of the baseline.
    """
    return float(improvement_per_condition(_as_matrix(x), _as_matrix(y)).mean())


@lru_cache(maxsize=16)
def _exact_splits(total: int, size: int) -> np.ndarray:
    """Every choice of ``size`` rows out of ``total`` as a ``(splits, total)`` 0/1 matrix."""
    splits = np.zeros((math.comb(total, size), total), dtype=np.float32)
    for row, chosen in enumerate(itertools.combinations(range(total), size)):
        splits[row, list(chosen)] = 1.0
    splits.setflags(write=False)
    return splits


def _random_splits(total: int, size: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` random choices of ``size`` rows out of ``total`` as a ``(draws, total)`` 0/1 matrix."""
    order = np.argsort(rng.random((draws, total)), axis=1)[:, :size]
    splits = np.zeros((draws, total), dtype=np.float32)
    np.put_along_axis(splits, order, 1.0, axis=1)
    return splits


def _improvement_from_ranks(rank_sums: np.ndarray, n_x: int, n_y: int) -> np.ndarray:
    """Pooled P(X > Y) from the per-condition rank sums of the X group (``(..., C)``, mid-ranks)."""
    u = rank_sums - n_x * (n_x + 1) / 2.0  # Mann-Whitney U of X per condition (ties count half)
    return (u / (n_x * n_y)).mean(axis=-1)


def permutation_p(
    x: np.ndarray,
    y: np.ndarray,
    max_exact: int = MAX_EXACT,
    draws: int = DRAWS,
    seed: int = 0,
) -> float:
    """Two-sided permutation p-value of :func:`pooled_improvement`, permuting whole seeds between the models.

    :param x: ``(n_x, C)`` candidate scores; ``y``: ``(n_y, C)`` baseline scores (same conditions).
    :param max_exact: enumerate every split when there are at most this many, else draw ``draws`` at random.
    :param seed: seed of the random splits (unused when exact).
    :returns: P(|P* - 1/2| >= |P - 1/2|) over the splits, P* the statistic of a split.
    :raises ValueError: on mismatched conditions.
    """
    x, y = _as_matrix(x), _as_matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need the same conditions, got {x.shape[1]} and {y.shape[1]} columns")
    n_x, n_y = len(x), len(y)
    ranks = rankdata(np.concatenate([x, y]), axis=0).astype(np.float64)  # (N, C) mid-ranks per condition
    observed = abs(_improvement_from_ranks(ranks[:n_x].sum(axis=0), n_x, n_y) - 0.5)
    total = n_x + n_y
    exact = math.comb(total, n_x) <= max_exact
    splits = _exact_splits(total, n_x) if exact else _random_splits(total, n_x, draws, np.random.default_rng(seed))
    extreme = np.abs(_improvement_from_ranks(splits @ ranks, n_x, n_y) - 0.5) >= observed - TOLERANCE
    return float(extreme.mean()) if exact else float((extreme.sum() + 1) / (draws + 1))


def split_improvements(scores: np.ndarray, n_x: int) -> np.ndarray:
    """Pooled P(X > Y) of every split of the rows of ``scores`` into ``n_x`` candidate rows and the rest.

    :param scores: ``(N, C)`` rows of both models together.
    :returns: ``(C(N, n_x),)`` the statistic of each split, in the order of ``itertools.combinations``.
    :raises ValueError: when there are more than :data:`MAX_EXACT` splits to enumerate.
    """
    scores = _as_matrix(scores)
    total = len(scores)
    if not 0 < n_x < total or math.comb(total, n_x) > MAX_EXACT:
        raise ValueError(f"need 0 < n_x < {total} rows and at most {MAX_EXACT} splits, got n_x = {n_x}")
    ranks = rankdata(scores, axis=0).astype(np.float64)
    return _improvement_from_ranks(_exact_splits(total, n_x) @ ranks, n_x, total - n_x)


def split_p_values(improvements: np.ndarray) -> np.ndarray:
    """The exact two-sided permutation p-value each split would get if it were the observed one.

    :param improvements: ``(S,)`` the statistic of every split (:func:`split_improvements`).
    :returns: ``(S,)`` the fraction of splits at least as far from 1/2 as each, the same value
        :func:`permutation_p` gives for that split.
    """
    distance = np.abs(np.asarray(improvements, dtype=np.float64) - 0.5)
    at_least = len(distance) - np.searchsorted(np.sort(distance), distance - TOLERANCE, side="left")
    return at_least / len(distance)


def min_p(n_x: int, n_y: int) -> float:
    """The smallest two-sided p-value the exact test can give with ``n_x`` vs ``n_y`` seeds (no ties)."""
    return min(1.0, 2.0 / math.comb(n_x + n_y, n_x))


def seed_bootstrap_improvement(
    x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """:func:`pooled_improvement` with a percentile CI from resampling whole seeds of each model.

    :returns: ``(point, low, high)``.
    """
    x, y = _as_matrix(x), _as_matrix(y)
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, len(x), size=(reps, len(x)))
    iy = rng.integers(0, len(y), size=(reps, len(y)))
    boot = improvement_per_condition(x[ix], y[iy]).mean(axis=-1)  # x[ix]: (reps, n_x, C)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return pooled_improvement(x, y), float(low), float(high)


def _iqm(cells: np.ndarray) -> np.ndarray:
    """25% trimmed mean along the last axis (rliable's IQM, ``scipy.stats.trim_mean``)."""
    n = cells.shape[-1]
    cut = int(0.25 * n)
    return np.sort(cells, axis=-1)[..., cut : n - cut].mean(axis=-1)


def seed_bootstrap_iqm(
    scores: np.ndarray, reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """IQM and mean of all cells of a ``(seeds, conditions)`` matrix, with CIs from resampling whole seeds.

    :returns: ``((iqm, low, high), (mean, low, high))``.
    """
    scores = _as_matrix(scores)
    rng = np.random.default_rng(seed)
    rows = scores[rng.integers(0, len(scores), size=(reps, len(scores)))].reshape(reps, -1)  # (reps, n * C)
    tail = (1 - confidence) / 2 * 100
    out = []
    for fn in (_iqm, lambda cells: cells.mean(axis=-1)):
        low, high = np.percentile(fn(rows), [tail, 100 - tail])
        out.append((float(fn(scores.reshape(1, -1))[0]), float(low), float(high)))
    return out[0], out[1]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error at most the level), in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def verdict(point: float, p_value: float, alpha: float = ALPHA) -> str:
    """:data:`BETTER` / :data:`WORSE` when ``p_value <= alpha`` and P(X > Y) is above / below 1/2, else :data:`SAME`."""
    if p_value <= alpha and point > 0.5:
        return BETTER
    if p_value <= alpha and point < 0.5:
        return WORSE
    return SAME
