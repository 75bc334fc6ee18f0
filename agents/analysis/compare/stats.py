"""Statistics over seeds: IQM and mean with bootstrap CIs, P(improvement) with its p-value, learning curves.

Which resampling each number uses:

- one condition at a time (a model's IQM and mean on a condition, a learning-curve band): rliable's
  stratified bootstrap, which on one condition is the plain bootstrap over seeds;
- anything pooled over conditions (:data:`ALL_OOD`: a model's pooled IQM and mean, pooled P(improvement))
  and every P(improvement) interval: whole seeds resampled, all of a seed's conditions together
  (:mod:`agents.analysis.compare.seed_tests`), since one trained policy scores every condition of its seed;
- the p-value of every P(improvement): the permutation test over whole seeds of
  :func:`agents.analysis.compare.seed_tests.permutation_p` (exact up to 10 vs 10 seeds).

Note on rliable 1.2: its bootstraps draw their indices from NumPy's *global* generator
(``np.random.choice``), ignoring ``random_state``; :func:`compare_runs` seeds it for each
estimate and restores the previous global state afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from rliable import library as rly
from rliable import metrics

from .runs import METRICS, Run
from .seed_tests import improvement_per_condition, permutation_p, seed_bootstrap_improvement, seed_bootstrap_iqm

log = logging.getLogger("agents.analysis.compare")  # the package logger, as before the split into modules

AGGREGATES = ("iqm", "mean")
P_IMPROVEMENT = "p_improvement"
IID = "iid"
ALL_OOD = "all_ood"
BASELINE_CORES = ("lstm",)
CANDIDATE_PREFIX = "rim"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% bootstrap CI.

    :param model: the model label (the candidate for P(improvement)).
    :param baseline: the baseline label for P(improvement), else ``""``.
    :param condition: a test condition, or :data:`ALL_OOD` for the pooled OOD conditions together.
    :param metric: a key of :data:`METRICS`.
    :param aggregate: ``"iqm"``, ``"mean"`` or :data:`P_IMPROVEMENT`.
    :param n_seeds: seeds of ``model``; ``baseline_seeds``: seeds of ``baseline`` (0 if none).
    :param p_value: for :data:`P_IMPROVEMENT`, the two-sided permutation p-value over whole seeds (unadjusted).
    """

    model: str
    baseline: str
    condition: str
    metric: str
    aggregate: str
    point: float
    low: float
    high: float
    n_seeds: int
    baseline_seeds: int = 0
    p_value: float | None = None


@dataclass(frozen=True)
class Curve:
    """Mean over seeds of the periodic ``mean_return`` of one model on one condition, with a 95% band.

    :param frames: training frames of the evaluations present in every seed of the model.
    """

    model: str
    condition: str
    frames: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    n_seeds: int


@dataclass
class Comparison:
    """Everything :func:`compare_runs` computed.

    :param split: the split all runs were trained on.
    :param models: ``{label: runs}``, runs sorted by seed.
    :param conditions: every condition of any model, ``iid`` first, then :data:`ALL_OOD` if computed.
    :param pooled: the conditions :data:`ALL_OOD` pools (empty when it was not computed).
    :param estimates: IQM and mean per model x condition x metric.
    :param improvements: P(improvement) per candidate x baseline x condition x metric.
    :param curves: learning curves per model x condition.
    :param notes: caveats for the report.
    :param selection_curves: per RIM model, the selection statistics of its training rollouts (``condition`` names
        the statistic: ``switch_rate``, ...), plotted beside the learning curves.
    """

    split: str
    models: dict[str, list[Run]]
    conditions: list[str]
    estimates: list[Estimate]
    improvements: list[Estimate]
    curves: list[Curve]
    reps: int
    seed: int
    notes: list[str] = field(default_factory=list)
    pooled: list[str] = field(default_factory=list)
    selection_curves: list[Curve] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        """All runs of all models."""
        return [run for runs in self.models.values() for run in runs]


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator (which rliable's bootstraps use) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _bootstrap(
    fn: Callable[..., np.ndarray], data: np.ndarray | list[np.ndarray], reps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates and 95% percentile CIs (shape ``(2, ...)``) of ``fn`` with rliable's stratified bootstrap.

    :param data: one ``(runs, tasks, ...)`` array, or a list of them bootstrapped independently.
    """
    with _seeded_numpy(seed):
        points, intervals = rly.get_interval_estimates({"x": data}, fn, reps=reps)
    return np.asarray(points["x"], dtype=float), np.asarray(intervals["x"], dtype=float)


def _model_conditions(runs: Sequence[Run]) -> list[str]:
    """Conditions evaluated in every run of a model, in the first run's order."""
    return [c for c in runs[0].scores if all(c in run.scores for run in runs[1:])]


def _ood_columns(conditions: Sequence[str], pooled: Sequence[str] | None = None) -> list[int]:
    """Columns of the pooled OOD conditions (``pooled``, default all but ``iid``) when there are at least two
    of them and every one is present, else none."""
    wanted = [c for c in conditions if c != IID] if pooled is None else list(pooled)
    columns = [conditions.index(c) for c in wanted if c in conditions]
    return columns if len(columns) >= 2 and len(columns) == len(wanted) else []


def _score_matrix(runs: Sequence[Run], conditions: Sequence[str], metric: str) -> np.ndarray:
    """``(runs, conditions)`` final scores."""
    return np.array([[run.scores[c][metric] for c in conditions] for run in runs], dtype=float)


def _iqm_columns(scores: np.ndarray) -> np.ndarray:
    """Per-column interquartile mean of a ``(runs, columns)`` matrix.

    The same 25% trimmed mean as :func:`rliable.metrics.aggregate_iqm` (``scipy.stats.trim_mean``)
    on each column, without scipy's per-call overhead, which dominates thousands of bootstrap replications.
    """
    n = scores.shape[0]
    cut = int(0.25 * n)
    return np.sort(scores, axis=0)[cut : n - cut].mean(axis=0)


def _columns_fn(scores: np.ndarray) -> np.ndarray:
    """Per-column IQM, then per-column mean, of a ``(runs, conditions)`` matrix."""
    return np.concatenate([_iqm_columns(scores), scores.mean(axis=0)])


def _model_estimates(
    label: str, runs: Sequence[Run], reps: int, seed: int, pooled: Sequence[str] | None = None
) -> list[Estimate]:
    """IQM and mean with CIs of one model for each of its conditions (stratified bootstrap, one condition at
    a time) and for the pooled OOD conditions (whole seeds resampled) and metric."""
    conditions = _model_conditions(runs)
    ood = _ood_columns(conditions, pooled)
    slots = [(c, "iqm") for c in conditions] + [(c, "mean") for c in conditions]
    out = []
    for metric in METRICS:
        scores = _score_matrix(runs, conditions, metric)
        points, ci = _bootstrap(_columns_fn, scores, reps, seed)
        out += [
            Estimate(label, "", condition, metric, aggregate, points[i], ci[0, i], ci[1, i], len(runs))
            for i, (condition, aggregate) in enumerate(slots)
        ]
        if ood:
            iqm, mean = seed_bootstrap_iqm(scores[:, ood], reps, seed)
            out += [
                Estimate(label, "", ALL_OOD, metric, aggregate, *values, len(runs))
                for aggregate, values in (("iqm", iqm), ("mean", mean))
            ]
    return out


_probability_of_improvement = improvement_per_condition  # per column of (runs, tasks) matrices (efficiency, tests)


def _rliable_improvement(x: np.ndarray, y: np.ndarray, ood: list[int]) -> np.ndarray:
    """P(improvement) per column, then pooled over the OOD columns, computed by rliable itself."""
    points = [metrics.probability_of_improvement(x[:, [j]], y[:, [j]]) for j in range(x.shape[1])]
    if ood:
        points.append(metrics.probability_of_improvement(x[:, ood], y[:, ood]))
    return np.array(points, dtype=float)


def _pair_improvements(
    candidate: str,
    cand_runs: Sequence[Run],
    baseline: str,
    base_runs: Sequence[Run],
    reps: int,
    seed: int,
    pooled: Sequence[str] | None = None,
) -> list[Estimate]:
    """P(candidate improves over baseline) per shared condition (and the pooled OOD ones) and metric, each with
    a CI from resampling whole seeds and the permutation p-value."""
    shared = set(_model_conditions(base_runs))
    conditions = [c for c in _model_conditions(cand_runs) if c in shared]
    ood = _ood_columns(conditions, pooled)
    columns = [[j] for j in range(len(conditions))] + ([ood] if ood else [])
    names = [*conditions, *([ALL_OOD] if ood else [])]
    out = []
    for metric in METRICS:
        x, y = _score_matrix(cand_runs, conditions, metric), _score_matrix(base_runs, conditions, metric)
        points = _rliable_improvement(x, y, ood)
        sizes = (len(cand_runs), len(base_runs))
        for i, (condition, cols) in enumerate(zip(names, columns, strict=True)):
            _, low, high = seed_bootstrap_improvement(x[:, cols], y[:, cols], reps, seed)
            p_value = permutation_p(x[:, cols], y[:, cols], seed=seed)
            out.append(Estimate(candidate, baseline, condition, metric, P_IMPROVEMENT, points[i], low, high, *sizes,
                                p_value))  # fmt: skip
    return out


def _common_frames(runs: Sequence[Run], condition: str) -> list[int]:
    """Evaluation frames of ``condition`` present in every run that has a curve for it."""
    sets = [set(run.curves[condition]) for run in runs if run.curves.get(condition)]
    return sorted(set.intersection(*sets)) if sets else []


def _model_curves(label: str, runs: Sequence[Run], reps: int, seed: int) -> list[Curve]:
    """Learning curves of one model: mean over the seeds that have a curve, with a 95% band, per condition with
    common frames (a seed recorded without its curve, e.g. from an older summary, is left out of the curves)."""
    runs = [run for run in runs if run.curves]
    by_frames: dict[tuple[int, ...], list[str]] = {}
    for condition in _model_conditions(runs) if runs else []:
        frames = tuple(_common_frames(runs, condition))
        if frames and all(condition in run.curves for run in runs):
            by_frames.setdefault(frames, []).append(condition)
    curves = []
    for frames, conditions in by_frames.items():
        data = np.array([[[run.curves[c][f] for f in frames] for c in conditions] for run in runs], dtype=float)
        points, ci = _bootstrap(lambda s: s.mean(axis=0).ravel(), data, reps, seed)
        shape = (len(conditions), len(frames))
        points, low, high = points.reshape(shape), ci[0].reshape(shape), ci[1].reshape(shape)
        for i, condition in enumerate(conditions):
            curves.append(
                Curve(label, condition, list(frames), points[i].tolist(), low[i].tolist(), high[i].tolist(), len(runs))
            )
    return curves


def _ordered_conditions(models: dict[str, list[Run]], estimates: Sequence[Estimate]) -> list[str]:
    """Every condition of any model in first-seen order, ``iid`` first and :data:`ALL_OOD` last."""
    seen: list[str] = []
    for runs in models.values():
        seen.extend(c for c in _model_conditions(runs) if c not in seen)
    seen.sort(key=lambda c: c != IID)
    if any(e.condition == ALL_OOD for e in estimates):
        seen.append(ALL_OOD)
    return seen


def _notes(models: dict[str, list[Run]], conditions: Sequence[str], curves: Sequence[Curve]) -> list[str]:
    """Caveats worth stating next to the numbers."""
    notes = []
    candidates = [m for m, runs in models.items() if runs[0].core.startswith(CANDIDATE_PREFIX)]
    baselines = [m for m, runs in models.items() if runs[0].core in BASELINE_CORES]
    if not baselines:
        notes.append("No LSTM baseline among the runs: P(improvement) was not computed.")
    elif not candidates:
        notes.append("No RIM model among the runs: P(improvement) was not computed.")
    for label, runs in models.items():
        missing = [c for c in conditions if c != ALL_OOD and c not in _model_conditions(runs)]
        if missing:
            notes.append(f"`{label}` lacks conditions {', '.join(missing)} in some or all of its runs.")
        if len(runs) < 3:
            notes.append(f"`{label}` has only {len(runs)} seed(s): its confidence intervals are not meaningful.")
        elif len(runs) < 4:
            notes.append(f"`{label}` has {len(runs)} seeds: its IQM is its mean (a 25% trim removes no seed).")
        if not any(curve.model == label for curve in curves):
            notes.append(f"`{label}` has no learning curve (no ood_curves.json, or no frames common to its seeds).")
    return notes


def compare_runs(
    models: dict[str, list[Run]],
    reps: int = 2000,
    seed: int = 0,
    pooled: Sequence[str] | None = None,
    baselines: Sequence[str] | None = None,
) -> Comparison:
    """Aggregate final scores and learning curves over seeds, with bootstrap CIs and permutation p-values.

    Every estimate is bootstrapped with a generator seeded to ``seed``, so results are deterministic and
    one model's CIs do not depend on which other models are compared.

    :param models: ``{label: runs}`` from :func:`group_runs`.
    :param reps: bootstrap replications.
    :param seed: seed of the bootstrap.
    :param pooled: the conditions :data:`ALL_OOD` pools (default: every condition but ``iid``); a table's
        primary endpoint names them, leaving out conditions where every model scores 0.
    :param baselines: the labels every candidate (a model whose core starts with :data:`CANDIDATE_PREFIX`) is
        compared with, itself excepted; labels not among ``models`` are skipped (default: the models whose core is
        in :data:`BASELINE_CORES`). A table's protocol names them: the LSTM, and e.g. the plain RIM as a contrast.
    :raises ValueError: if ``models`` is empty, ``reps`` < 1 or ``pooled`` names ``iid``.
    """
    if not models:
        raise ValueError("nothing to compare: no models")
    if reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps}")
    if pooled is not None and IID in pooled:
        raise ValueError(f"pooled OOD conditions must not include {IID!r}, got {list(pooled)}")
    estimates, curves, improvements = [], [], []
    for label, runs in models.items():
        log.info("bootstrapping %s (%d seeds, %d reps)", label, len(runs), reps)
        estimates += _model_estimates(label, runs, reps, seed, pooled)
        curves += _model_curves(label, runs, reps, seed)
    if baselines is None:
        baselines = [label for label, runs in models.items() if runs[0].core in BASELINE_CORES]
    for candidate, cand_runs in models.items():
        if not cand_runs[0].core.startswith(CANDIDATE_PREFIX):
            continue
        for baseline in (b for b in baselines if b in models and b != candidate):
            improvements += _pair_improvements(candidate, cand_runs, baseline, models[baseline], reps, seed, pooled)
    split = next(iter(models.values()))[0].split
    conditions = _ordered_conditions(models, estimates)
    notes = _notes(models, conditions, curves)
    has_pooled = ALL_OOD in conditions
    pooled_names = [c for c in conditions if c not in (IID, ALL_OOD)] if pooled is None else list(pooled)
    return Comparison(
        split,
        models,
        conditions,
        estimates,
        improvements,
        curves,
        reps,
        seed,
        notes,
        pooled_names if has_pooled else [],
        [c for label, runs in models.items() for c in _selection_curves(label, runs, reps, seed)],
    )


def _selection_curves(label: str, runs: Sequence[Run], reps: int, seed: int) -> list[Curve]:
    """The selection statistics of the training rollouts of one model as :class:`Curve` s (``condition``: the
    statistic), mean over the seeds that recorded them, with a 95% band."""
    recorded = [run for run in runs if run.selection]
    shadows = [replace(run, curves=run.selection, scores={name: {} for name in run.selection}) for run in recorded]
    return _model_curves(label, shadows, reps, seed)
