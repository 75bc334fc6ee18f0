"""Do RIM units tie to what happens in the level? Mutual information between activity and environment factors.

For each unit's activity (active or not) and for the active set (one category per set), and each factor of
:mod:`envs.factors` recorded at the same steps, :func:`specialisation` reports the plug-in mutual information
in bits (:func:`mutual_information`) beside a permutation baseline.

The baseline (:func:`circular_shifts`): the factor's sequence, episodes laid end to end in the order they were
played, is shifted circularly against the activity by a random offset of at least the longest episode's length
(when the steps allow it; otherwise at least 1). A shift keeps both sequences exactly as they are (marginals,
runs, autocorrelation) and only moves their alignment, so every step meets a factor value of another episode:
what the units share with the factor by chance, given how slowly both change, is what remains. Shuffling single
steps would break the runs of both and give a baseline too low for slowly changing signals (plug-in MI of two
autocorrelated sequences is large by chance), and swapping whole episodes is not defined between episodes of
different lengths. Reported: the baseline's mean and 95th percentile, ``excess_bits`` (MI minus the baseline
mean) and ``p_value`` ((1 + shifts with MI at least the observed) / (1 + shifts)).

The plug-in estimator is biased upwards by about ``(|X| - 1)(|Y| - 1) / (2 S ln 2)`` bits; the baseline carries
the same bias, so ``excess_bits`` is the number to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PERMUTATIONS = 200
"""Circular shifts per baseline."""
SEED = 0
"""Seed of the shifts (the baseline is the same for the same recordings)."""
SET = "set"
"""The ``variable`` name of the active set (units have their labels, ``u0``, ...)."""


def _categories(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` as indices ``0 .. n - 1`` and ``n``."""
    uniques, index = np.unique(values, return_inverse=True)
    return index.reshape(-1).astype(np.int64), len(uniques)


def _mi_rows(x: np.ndarray, nx: int, y: np.ndarray, ny: int) -> np.ndarray:
    """Plug-in MI in bits of ``x`` ``(S,)`` against each row of ``y`` ``(P, S)`` (category indices).

    :returns: ``(P,)``.
    """
    rows, steps = y.shape
    joint = (np.arange(rows)[:, None] * nx + x[None, :]) * ny + y  # (P, S)
    counts = np.bincount(joint.reshape(-1), minlength=rows * nx * ny).reshape(rows, nx, ny) / steps
    px, py = counts.sum(axis=2, keepdims=True), counts.sum(axis=1, keepdims=True)  # (P, nx, 1), (P, 1, ny)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, counts * np.log2(counts / (px * py)), 0.0)
    return np.maximum(terms.sum(axis=(1, 2)), 0.0)


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information in bits of two discrete sequences.

    :param x: ``(S,)`` any discrete values; ``y``: ``(S,)``.
    :returns: ``sum p(x, y) log2 (p(x, y) / (p(x) p(y)))``; 0 for empty sequences.
    """
    if len(x) == 0:
        return 0.0
    (xi, nx), (yi, ny) = _categories(np.asarray(x)), _categories(np.asarray(y))
    return float(_mi_rows(xi, nx, yi[None, :], ny)[0])


def entropy_bits(y: np.ndarray) -> float:
    """Plug-in entropy in bits of a discrete sequence ``(S,)``."""
    if len(y) == 0:
        return 0.0
    p = np.unique(y, return_counts=True)[1] / len(y)
    return float(-(p * np.log2(p)).sum())


def circular_shifts(steps: int, longest: int, count: int = PERMUTATIONS, seed: int = SEED) -> np.ndarray:
    """Offsets of the baseline's circular shifts (module docstring).

    :param steps: length ``S`` of the sequences.
    :param longest: length of the longest episode.
    :returns: ``(count,)`` int64 offsets in ``[longest, S - longest]`` if ``S > 2 * longest``, else in ``[1, S - 1]``;
        empty when ``S < 2``.
    """
    if steps < 2:
        return np.zeros(0, dtype=np.int64)
    low, high = (longest, steps - longest) if steps > 2 * longest else (1, steps - 1)
    return np.random.default_rng(seed).integers(low, high + 1, size=count)


def specialisation(
    masks: np.ndarray,
    factors: dict[str, np.ndarray],
    lengths: Sequence[int],
    labels: Sequence[str],
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
) -> list[dict[str, Any]]:
    """MI of each unit's activity and of the active set with each factor, against the shifted baseline.

    :param masks: ``(S, R)`` bool, the episodes' active masks laid end to end.
    :param factors: ``{factor: (S,) int}`` at the same steps.
    :param lengths: the episodes' lengths (summing to ``S``).
    :param labels: ``R`` unit labels.
    :returns: one row per variable (units, then :data:`SET`) and factor: ``variable``, ``factor``, ``mi_bits``,
        ``baseline_mean``, ``baseline_p95``, ``excess_bits``, ``p_value``, ``factor_entropy_bits``.
    """
    steps = len(masks)
    shifts = circular_shifts(steps, max(lengths, default=0), permutations, seed)
    order = np.arange(steps)
    rolled = (order[None, :] - shifts[:, None]) % max(steps, 1)  # (P, S): step t meets the factor of step t - shift
    variables = [(label, masks[:, r].astype(np.int64)) for r, label in enumerate(labels)]
    set_codes = np.unique(masks, axis=0, return_inverse=True)[1].reshape(-1) if steps else np.zeros(0, dtype=int)
    variables.append((SET, set_codes))
    rows = []
    for factor, values in factors.items():
        yi, ny = _categories(np.asarray(values)) if steps else (np.zeros(0, dtype=np.int64), 1)
        shifted = np.concatenate([yi[None, :], yi[rolled]]) if steps else np.zeros((1, 0), dtype=np.int64)
        for name, x in variables:
            xi, nx = _categories(x) if steps else (x, 1)
            mi = _mi_rows(xi, nx, shifted, ny) if steps else np.zeros(1)  # (1 + P,): observed, then the baseline
            observed, baseline = float(mi[0]), mi[1:]
            mean = float(baseline.mean()) if len(baseline) else 0.0
            rows.append(
                {
                    "variable": name,
                    "factor": factor,
                    "mi_bits": observed,
                    "baseline_mean": mean,
                    "baseline_p95": float(np.quantile(baseline, 0.95)) if len(baseline) else 0.0,
                    "excess_bits": observed - mean,
                    "p_value": float((1 + np.sum(baseline >= observed - 1e-12)) / (1 + len(baseline))),
                    "factor_entropy_bits": entropy_bits(values),
                }
            )
    return rows


def aggregate_specialisation(per_run: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per factor, over runs (seeds) of one condition: units are exchangeable between seeds, so per seed the
    unit with the largest excess counts.

    :param per_run: per run, :func:`specialisation` rows (runs without any are left out).
    :returns: per factor: ``factor``, ``n_runs``, ``set_excess_bits`` (mean over runs), ``best_unit_excess_bits``
        (mean over runs of the largest unit excess), ``set_above_p95`` (runs whose set MI is above its baseline's
        95th percentile) and ``units_above_p95`` (runs with a unit above it).
    """
    runs = [rows for rows in per_run if rows]
    factors = list(dict.fromkeys(row["factor"] for rows in runs for row in rows))
    out = []
    for factor in factors:
        sets = [[r for r in rows if r["factor"] == factor and r["variable"] == SET] for rows in runs]
        units = [[r for r in rows if r["factor"] == factor and r["variable"] != SET] for rows in runs]
        out.append(
            {
                "factor": factor,
                "n_runs": len(runs),
                "set_excess_bits": float(np.mean([s[0]["excess_bits"] for s in sets if s])),
                "best_unit_excess_bits": float(np.mean([max(r["excess_bits"] for r in u) for u in units if u])),
                "set_above_p95": sum(bool(s) and s[0]["mi_bits"] > s[0]["baseline_p95"] for s in sets),
                "units_above_p95": sum(any(r["mi_bits"] > r["baseline_p95"] for r in u) for u in units),
            }
        )
    return out
