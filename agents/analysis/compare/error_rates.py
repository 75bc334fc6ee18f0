"""How often a verdict rule is wrong, and how many seeds it needs: Monte Carlo checks of a rule on our own data.

A *rule* maps two ``(seeds, conditions)`` score matrices (candidate, baseline) to a verdict
(:data:`~agents.analysis.compare.seed_tests.BETTER`, ``SAME`` or ``WORSE``).

- :func:`false_verdict_rate`: under the null hypothesis. Both models' seeds are drawn, whole rows with
  replacement, from one pool of observed seeds (every model's seeds of a table), so the null data keep the
  correlation across conditions, the ties and the bimodality that our seeds show. The rate of "better" or
  "worse" verdicts is the rule's false-verdict rate at that seed count; its Monte Carlo standard error is
  ``sqrt(rate (1 - rate) / trials)``.
- :func:`detection_rate`: under the observed difference. Each model's seeds are drawn from its own observed
  seeds; the rate of verdicts in the observed direction is the power at that seed count, and
  :func:`seeds_for_power` finds the smallest count that reaches a target.

Two rules are provided: :func:`permutation_rule` (the suite's rule: a two-sided permutation test of pooled
P(X > Y) over whole seeds, see :func:`~agents.analysis.compare.seed_tests.permutation_p`) and
:func:`stratified_bootstrap_rule` (the rule the suite used before: "the 95% stratified-bootstrap CI of
P(X > Y) excludes 1/2", resampling each condition's seeds independently, as rliable does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .seed_tests import (
    ALPHA,
    BETTER,
    SAME,
    WORSE,
    improvement_per_condition,
    permutation_p,
    pooled_improvement,
    split_improvements,
    split_p_values,
    verdict,
)

Rule = Callable[[np.ndarray, np.ndarray], str]
SIMULATION_DRAWS = 999  # random splits per permutation test beyond the exact limit, inside simulations


def permutation_rule(x: np.ndarray, y: np.ndarray, alpha: float = ALPHA, draws: int = SIMULATION_DRAWS) -> str:
    """The suite's verdict: two-sided permutation test of pooled P(X > Y), whole seeds permuted."""
    return verdict(pooled_improvement(x, y), permutation_p(x, y, draws=draws), alpha)


def stratified_bootstrap_rule(x: np.ndarray, y: np.ndarray, reps: int = 1000, seed: int = 0) -> str:
    """The former verdict: the percentile CI of pooled P(X > Y) excludes 1/2, each condition's seeds resampled
    independently of the others (rliable's stratified bootstrap)."""
    rng = np.random.default_rng(seed)
    n_x, n_y, conditions = len(x), len(y), x.shape[1]
    ix = rng.integers(0, n_x, size=(reps, n_x, conditions))
    iy = rng.integers(0, n_y, size=(reps, n_y, conditions))
    xs = np.take_along_axis(np.broadcast_to(x, (reps, n_x, conditions)), ix, axis=1)
    ys = np.take_along_axis(np.broadcast_to(y, (reps, n_y, conditions)), iy, axis=1)
    boot = improvement_per_condition(xs, ys).mean(axis=-1)
    low, high = np.percentile(boot, [2.5, 97.5])
    if low > 0.5:
        return BETTER
    if high < 0.5:
        return WORSE
    return SAME


@dataclass(frozen=True)
class Rate:
    """A Monte Carlo rate with its standard error.

    :param rate: the fraction of trials with the counted outcome.
    :param mcse: its Monte Carlo standard error, ``sqrt(rate (1 - rate) / trials)``.
    :param trials: the number of simulated comparisons.
    :param seeds: seeds per model in each trial.
    """

    rate: float
    mcse: float
    trials: int
    seeds: int

    @classmethod
    def of(cls, hits: int, trials: int, seeds: int) -> Rate:
        rate = hits / trials
        return cls(rate, math.sqrt(rate * (1 - rate) / trials), trials, seeds)

    @classmethod
    def of_means(cls, rates: np.ndarray, seeds: int) -> Rate:
        """The mean of per-trial rates, its standard error from their spread."""
        rates = np.asarray(rates, dtype=float)
        spread = float(rates.std(ddof=1)) if len(rates) > 1 else 0.0
        return cls(float(rates.mean()), spread / math.sqrt(len(rates)), len(rates), seeds)


def false_verdict_rate(pool: np.ndarray, seeds: int, trials: int, rule: Rule = permutation_rule, seed: int = 0) -> Rate:
    """Rate of "better"/"worse" verdicts when both models' seeds come from ``pool`` (the null hypothesis).

    :param pool: ``(observed seeds, conditions)`` scores; rows are drawn whole, with replacement.
    :param seeds: seeds per model in each simulated comparison.
    :param trials: simulated comparisons.
    """
    pool = np.asarray(pool, dtype=float)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        rows = pool[rng.integers(0, len(pool), size=2 * seeds)]
        hits += rule(rows[:seeds], rows[seeds:]) != SAME
    return Rate.of(hits, trials, seeds)


def exact_split_false_verdict_rate(
    pool: np.ndarray, seeds: int, trials: int, alpha: float = ALPHA, seed: int = 0
) -> Rate:
    """:func:`false_verdict_rate` of :func:`permutation_rule`, each trial's split of the seeds counted exactly.

    Each trial draws ``2 * seeds`` rows from ``pool`` as :func:`false_verdict_rate` does, then, instead of
    testing the one split that drew them, counts the fraction of all ``C(2 seeds, seeds)`` splits into
    candidate and baseline whose exact permutation test gives a verdict. Under the null every split of a
    drawn set is equally likely, so this fraction is the rule's false-verdict rate given those rows; its
    mean over trials estimates the same rate as :func:`false_verdict_rate` with a far smaller Monte Carlo
    error, and each trial's fraction is at most ``alpha`` when the test is valid (the property it checks).

    :param pool: ``(observed seeds, conditions)`` scores; rows are drawn whole, with replacement.
    :param seeds: seeds per model (``C(2 seeds, seeds)`` must be enumerable, at most 10).
    :returns: the mean rate; ``mcse`` is the standard error of the mean over trials.
    """
    pool = np.asarray(pool, dtype=float)
    rng = np.random.default_rng(seed)
    fractions = np.empty(trials)
    for trial in range(trials):
        rows = pool[rng.integers(0, len(pool), size=2 * seeds)]
        improvements = split_improvements(rows, seeds)
        called = (split_p_values(improvements) <= alpha) & (improvements != 0.5)
        fractions[trial] = called.mean()
    return Rate.of_means(fractions, seeds)


def detection_rate(
    x: np.ndarray, y: np.ndarray, seeds: int, trials: int, rule: Rule = permutation_rule, seed: int = 0
) -> Rate:
    """Rate of verdicts in the direction of the observed P(X > Y) with ``seeds`` drawn from each model's own seeds."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    wanted = BETTER if pooled_improvement(x, y) > 0.5 else WORSE
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        xs = x[rng.integers(0, len(x), size=seeds)]
        ys = y[rng.integers(0, len(y), size=seeds)]
        hits += rule(xs, ys) == wanted
    return Rate.of(hits, trials, seeds)


def seeds_for_power(
    x: np.ndarray,
    y: np.ndarray,
    target: float = 0.8,
    counts: Sequence[int] = (5, 10, 15, 20, 30, 40, 60),
    trials: int = 200,
    rule: Rule = permutation_rule,
    seed: int = 0,
) -> tuple[int | None, list[Rate]]:
    """The smallest seed count in ``counts`` whose :func:`detection_rate` reaches ``target``.

    :returns: ``(that count or None, the rates computed, in order)``; stops at the first count that reaches it.
    """
    rates = []
    for count in counts:
        rate = detection_rate(x, y, count, trials, rule, seed)
        rates.append(rate)
        if rate.rate >= target:
            return count, rates
    return None, rates
