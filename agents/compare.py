"""Compare finished runs (RIM vs LSTM) with stratified-bootstrap confidence intervals (rliable).

A run folder (written by :func:`agents.experiment.train`) holds ``config.yaml`` and
``eval.json`` (the final deterministic evaluation of every test condition), and usually
``ood_curves.json`` (periodic evaluations during training). For each model (runs that
differ only in their seed) and condition, the final ``mean_return`` and ``mean_success``
are aggregated over seeds: interquartile mean (IQM) and mean with 95% stratified-bootstrap
CIs, the probability of improvement of every RIM model over every LSTM model, and
learning curves with bootstrap bands. :func:`write_report` writes ``report.md``,
``summary.csv``, ``summary.json``, ``learning_curves.png`` and ``ood_bars.png``.

Usage::

    comparison, files = compare(["multirun/2026-11-28/12-00-00"], out_dir="compare", reps=2000)
    log_to_wandb(comparison, files, logger_config(comparison.runs, "auto"))

Note on rliable 1.2: its bootstraps draw their indices from NumPy's *global* generator
(``np.random.choice``), ignoring ``random_state``; :func:`compare_runs` seeds it for each
estimate and restores the previous global state afterwards.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rliable import library as rly
from rliable import metrics

log = logging.getLogger(__name__)

METRICS = {"return": "mean_return", "success": "mean_success"}
METRIC_TITLES = {"return": "Return", "success": "Success rate"}
AGGREGATES = ("iqm", "mean")
AGGREGATE_TITLES = {"iqm": "IQM", "mean": "mean"}
P_IMPROVEMENT = "p_improvement"
IID = "iid"
ALL_OOD = "all_ood"
BASELINE_CORES = ("lstm",)
CANDIDATE_PREFIX = "rim"
CORE_ORDER = ("lstm", "gru", "rim", "rim_gru")
DEFAULT_PROJECT = "rims"
SUMMARY_FIELDS = (
    "model", "baseline", "condition", "metric", "aggregate", "point", "low", "high", "n_seeds", "baseline_seeds",
)  # fmt: skip
_IGNORED_TOP_KEYS = frozenset(
    {"seed", "logger", "eval", "device", "torch_threads", "progress_bar", "resume", "hydra", "checkpoint"}
)
_IGNORED_LEAVES = frozenset({"run_name", "run_dir", "out_dir", "output_dir", "dir", "path"})
_SHORT_KEYS = {"model.num_units": "u", "model.k": "k", "model.hidden_size": "h", "agent.name": ""}
_GROUP_ORDER = {"model": 0, "agent": 1}
_SKIPPED_DIRS = frozenset({"wandb", "__pycache__"})


@dataclass(frozen=True)
class Run:
    """One finished run folder.

    :param path: the run folder.
    :param config: the resolved ``config.yaml`` as a plain dict.
    :param scores: ``{condition: {"return": ..., "success": ...}}`` of the final deterministic evaluation,
        conditions in ``eval.json`` order.
    :param curves: ``{condition: {frames: mean_return}}`` from ``ood_curves.json`` (empty if missing).
    """

    path: Path
    config: dict[str, Any]
    scores: dict[str, dict[str, float]]
    curves: dict[str, dict[int, float]]

    @property
    def core(self) -> str:
        """The recurrent core (``model.core``)."""
        return str(self.config["model"]["core"])

    @property
    def seed(self) -> int:
        """The training seed."""
        return int(self.config["seed"])

    @property
    def split(self) -> str:
        """The split name (``env.name``)."""
        return str(self.config["env"]["name"])

    @property
    def logger(self) -> dict[str, Any]:
        """The run's logger config; ``{"name": "none"}`` when it had none."""
        logger = self.config.get("logger")
        return dict(logger) if isinstance(logger, dict) else {"name": "none"}


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% bootstrap CI.

    :param model: the model label (the candidate for P(improvement)).
    :param baseline: the baseline label for P(improvement), else ``""``.
    :param condition: a test condition, or :data:`ALL_OOD` for all conditions but ``iid`` together.
    :param metric: a key of :data:`METRICS`.
    :param aggregate: ``"iqm"``, ``"mean"`` or :data:`P_IMPROVEMENT`.
    :param n_seeds: seeds of ``model``; ``baseline_seeds``: seeds of ``baseline`` (0 if none).
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
    :param estimates: IQM and mean per model x condition x metric.
    :param improvements: P(improvement) per candidate x baseline x condition x metric.
    :param curves: learning curves per model x condition.
    :param notes: caveats for the report.
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

    @property
    def runs(self) -> list[Run]:
        """All runs of all models."""
        return [run for runs in self.models.values() for run in runs]


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out_dir: Path
    report: Path
    summary_csv: Path
    summary_json: Path
    learning_curves: Path
    ood_bars: Path


# ----------------------------------------------------------------------------- loading


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (with ``config.yaml``) at or below ``paths``, finished or not, sorted, without duplicates.

    Hidden folders (``.hydra``) and ``wandb`` folders are not searched; nor is anything inside a run folder.

    :param paths: run folders or folders containing run folders at any depth.
    :raises ValueError: if a path does not exist.
    """
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        found.update(_walk_runs(path.resolve()))
    return sorted(found)


def _walk_runs(root: Path) -> Iterator[Path]:
    """Folders holding ``config.yaml`` at or below ``root``, not descending into them."""
    if root.is_file():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        if "config.yaml" in filenames:
            dirnames.clear()
            yield Path(dirpath)
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS)


def load_run(path: Path) -> Run:
    """Read one finished run folder.

    :raises ValueError: if a file is malformed or ``eval.json`` has no deterministic rows.
    """
    config = _read_yaml(path / "config.yaml")
    for key in ("seed", "model.core", "env.name"):
        if _lookup(config, key) is None:
            raise ValueError(f"{path / 'config.yaml'} has no {key}")
    rows = [row for row in _read_json_rows(path / "eval.json") if row.get("mode", "deterministic") == "deterministic"]
    if not rows:
        raise ValueError(f"{path / 'eval.json'} has no deterministic evaluation rows")
    scores = {str(row["condition"]): {m: float(row[key]) for m, key in METRICS.items()} for row in rows}
    curves: dict[str, dict[int, float]] = {}
    if (path / "ood_curves.json").is_file():
        for row in _read_json_rows(path / "ood_curves.json"):
            curves.setdefault(str(row["condition"]), {})[int(row["frames"])] = float(row["mean_return"])
    return Run(path=path, config=config, scores=scores, curves=curves)


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects from ``path``."""
    try:
        data = json.loads(path.read_text() or "[]")
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError(f"{path} must hold a list of objects")
    return data


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    """``config[a][b]`` for ``"a.b"``, or None."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Finished runs at or below ``paths``; unfinished ones (no ``eval.json``) are skipped with a warning.

    :raises ValueError: if no finished run is found or the runs mix splits.
    """
    paths = list(paths)
    runs = []
    for path in find_runs(paths):
        if not (path / "eval.json").is_file():
            log.warning("skipping %s: no eval.json (unfinished run)", path)
            continue
        runs.append(load_run(path))
    if not runs:
        where = ", ".join(str(p) for p in paths)
        raise ValueError(f"no finished runs (folders with config.yaml and eval.json) under {where}")
    _check_one_split(runs)
    return runs


def _check_one_split(runs: Sequence[Run]) -> None:
    """Raise if the runs were trained on different splits."""
    by_split: dict[str, Path] = {}
    for run in runs:
        by_split.setdefault(run.split, run.path)
    if len(by_split) > 1:
        listed = "; ".join(f"{split!r} (e.g. {path})" for split, path in by_split.items())
        raise ValueError(f"runs mix splits (env.name): {listed}; compare one split at a time")


# ----------------------------------------------------------------------------- labels


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a nested dict (lists stay leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _is_label_key(dotted: str) -> bool:
    """Whether a config key can tell models apart (not seed, logger, eval budgets, paths, ...)."""
    parts = dotted.split(".")
    leaf = parts[-1]
    if parts[0] in _IGNORED_TOP_KEYS or dotted == "model.core":
        return False
    return leaf not in _IGNORED_LEAVES and not leaf.endswith(("_dir", "_path"))


def _label_part(dotted: str, value: Any) -> str:
    """``u6`` for ``model.num_units=6``, ``a2c`` for ``agent.name``, ``lr=...`` style otherwise."""
    shown = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    if dotted in _SHORT_KEYS:
        return f"{_SHORT_KEYS[dotted]}{shown}"
    name = dotted.removeprefix("model.").removeprefix("agent.")
    return f"{name}={shown}"


def label_runs(runs: Sequence[Run]) -> list[str]:
    """A model label per run: the core name plus every setting that differs between runs.

    A config key joins the label when the runs that have it hold more than one value for it
    (``seed``, ``logger``, ``eval`` budgets, device and path-like keys never do), model settings
    first, then agent settings, then the rest, e.g.
    ``rim u6 k4`` in a ``num_units`` x ``k`` grid or ``lstm a2c`` when PPO and A2C runs are mixed.
    """
    flats = [_flatten(run.config) for run in runs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys and _is_label_key(k))
    varying = [k for k in keys if len({json.dumps(f[k], sort_keys=True) for f in flats if k in f}) > 1]
    varying.sort(key=lambda k: _GROUP_ORDER.get(k.split(".")[0], len(_GROUP_ORDER)))
    pairs = zip(runs, flats, strict=True)
    return [" ".join([run.core, *(_label_part(k, f[k]) for k in varying if k in f)]) for run, f in pairs]


def _natural_key(text: str) -> list[Any]:
    """Sort key that orders ``u10`` after ``u6``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """``{label: runs sorted by seed}``; baselines (lstm, gru) first, labels in natural order.

    :raises ValueError: if a model has two runs with the same seed.
    """
    groups: dict[str, list[Run]] = {}
    for run, label in zip(runs, label_runs(runs), strict=True):
        groups.setdefault(label, []).append(run)
    for label, members in groups.items():
        members.sort(key=lambda run: run.seed)
        for first, second in itertools.pairwise(members):
            if first.seed == second.seed:
                raise ValueError(
                    f"model {label!r} has two runs with seed {first.seed}: {first.path} and {second.path}; "
                    "pass only one of them"
                )

    def order(label: str) -> tuple[int, list[Any]]:
        core = groups[label][0].core
        rank = CORE_ORDER.index(core) if core in CORE_ORDER else len(CORE_ORDER)
        return rank, _natural_key(label)

    return {label: groups[label] for label in sorted(groups, key=order)}


# ----------------------------------------------------------------------------- statistics


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


def _ood_columns(conditions: Sequence[str]) -> list[int]:
    """Columns of the OOD conditions (all but ``iid``) when there are at least two of them, else none."""
    columns = [j for j, c in enumerate(conditions) if c != IID]
    return columns if len(columns) >= 2 else []


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


def _aggregate_fn(ood: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    """Per-column IQM and mean (then IQM and mean over all OOD cells) of a ``(runs, conditions)`` matrix."""

    def fn(scores: np.ndarray) -> np.ndarray:
        parts = [_iqm_columns(scores), scores.mean(axis=0)]
        if ood:
            cells = scores[:, ood].reshape(-1, 1)
            parts += [_iqm_columns(cells), cells.mean(axis=0)]
        return np.concatenate(parts)

    return fn


def _model_estimates(label: str, runs: Sequence[Run], reps: int, seed: int) -> list[Estimate]:
    """IQM and mean with CIs of one model for each of its conditions (and all OOD ones) and metric."""
    conditions = _model_conditions(runs)
    ood = _ood_columns(conditions)
    slots = [(c, "iqm") for c in conditions] + [(c, "mean") for c in conditions]
    slots += [(ALL_OOD, "iqm"), (ALL_OOD, "mean")] if ood else []
    out = []
    for metric in METRICS:
        points, ci = _bootstrap(_aggregate_fn(ood), _score_matrix(runs, conditions, metric), reps, seed)
        out += [
            Estimate(label, "", condition, metric, aggregate, points[i], ci[0, i], ci[1, i], len(runs))
            for i, (condition, aggregate) in enumerate(slots)
        ]
    return out


def _probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per column P(X > Y) + P(X = Y) / 2 of ``(runs_x, tasks)`` and ``(runs_y, tasks)`` scores.

    Equals :func:`rliable.metrics.probability_of_improvement` on each column (its Mann-Whitney U
    divided by ``runs_x * runs_y``; identical columns give 0.5), vectorised so that thousands of
    bootstrap replications stay fast.
    """
    diff = x[:, None, :] - y[None, :, :]
    return (diff > 0).mean(axis=(0, 1)) + 0.5 * (diff == 0).mean(axis=(0, 1))


def _improvement_fn(ood: list[int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """P(improvement) per column, then averaged over the OOD columns (rliable's multi-task average)."""

    def fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        per_task = _probability_of_improvement(x, y)
        return np.concatenate([per_task, [per_task[ood].mean()]]) if ood else per_task

    return fn


def _rliable_improvement(x: np.ndarray, y: np.ndarray, ood: list[int]) -> np.ndarray:
    """The point estimates of :func:`_improvement_fn`, computed by rliable itself."""
    points = [metrics.probability_of_improvement(x[:, [j]], y[:, [j]]) for j in range(x.shape[1])]
    if ood:
        points.append(metrics.probability_of_improvement(x[:, ood], y[:, ood]))
    return np.array(points, dtype=float)


def _pair_improvements(
    candidate: str, cand_runs: Sequence[Run], baseline: str, base_runs: Sequence[Run], reps: int, seed: int
) -> list[Estimate]:
    """P(candidate improves over baseline) with CIs, per shared condition (and all OOD ones) and metric."""
    shared = set(_model_conditions(base_runs))
    conditions = [c for c in _model_conditions(cand_runs) if c in shared]
    ood = _ood_columns(conditions)
    names = [*conditions, *([ALL_OOD] if ood else [])]
    out = []
    for metric in METRICS:
        x, y = _score_matrix(cand_runs, conditions, metric), _score_matrix(base_runs, conditions, metric)
        _, ci = _bootstrap(_improvement_fn(ood), [x, y], reps, seed)
        points = _rliable_improvement(x, y, ood)
        sizes = (len(cand_runs), len(base_runs))
        out += [
            Estimate(candidate, baseline, condition, metric, P_IMPROVEMENT, points[i], ci[0, i], ci[1, i], *sizes)
            for i, condition in enumerate(names)
        ]
    return out


def _common_frames(runs: Sequence[Run], condition: str) -> list[int]:
    """Evaluation frames of ``condition`` present in every run (none if a run has no curve for it)."""
    sets = [set(run.curves.get(condition, {})) for run in runs]
    return sorted(set.intersection(*sets)) if sets else []


def _model_curves(label: str, runs: Sequence[Run], reps: int, seed: int) -> list[Curve]:
    """Learning curves of one model: mean over seeds with a 95% band, per condition with common frames."""
    by_frames: dict[tuple[int, ...], list[str]] = {}
    for condition in _model_conditions(runs):
        frames = tuple(_common_frames(runs, condition))
        if frames:
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
        if not any(curve.model == label for curve in curves):
            notes.append(f"`{label}` has no learning curve (no ood_curves.json, or no frames common to its seeds).")
    return notes


def compare_runs(models: dict[str, list[Run]], reps: int = 2000, seed: int = 0) -> Comparison:
    """Aggregate final scores and learning curves over seeds, with stratified-bootstrap CIs.

    Every estimate is bootstrapped with NumPy seeded to ``seed``, so results are deterministic and
    one model's CIs do not depend on which other models are compared.

    :param models: ``{label: runs}`` from :func:`group_runs`.
    :param reps: bootstrap replications.
    :param seed: seed of the bootstrap.
    :raises ValueError: if ``models`` is empty or ``reps`` < 1.
    """
    if not models:
        raise ValueError("nothing to compare: no models")
    if reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps}")
    estimates, curves, improvements = [], [], []
    for label, runs in models.items():
        log.info("bootstrapping %s (%d seeds, %d reps)", label, len(runs), reps)
        estimates += _model_estimates(label, runs, reps, seed)
        curves += _model_curves(label, runs, reps, seed)
    for candidate, cand_runs in models.items():
        if not cand_runs[0].core.startswith(CANDIDATE_PREFIX):
            continue
        for baseline, base_runs in models.items():
            if base_runs[0].core in BASELINE_CORES:
                improvements += _pair_improvements(candidate, cand_runs, baseline, base_runs, reps, seed)
    split = next(iter(models.values()))[0].split
    conditions = _ordered_conditions(models, estimates)
    notes = _notes(models, conditions, curves)
    return Comparison(split, models, conditions, estimates, improvements, curves, reps, seed, notes)


# ----------------------------------------------------------------------------- tables


def _cell(estimate: Estimate | None) -> str:
    """``0.812 [0.750, 0.900]``, or ``-`` when missing."""
    if estimate is None:
        return "-"
    return f"{estimate.point:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _condition_title(condition: str) -> str:
    """Column title of a condition."""
    return "all OOD" if condition == ALL_OOD else condition


def metric_table(comparison: Comparison, metric: str) -> str:
    """Markdown table of one metric: a row per model x aggregate, a column per condition, ``point [low, high]``."""
    index = {(e.model, e.condition, e.aggregate): e for e in comparison.estimates if e.metric == metric}
    header = ["model", "aggregate", *map(_condition_title, comparison.conditions)]
    rows = [
        [label, AGGREGATE_TITLES[agg], *(_cell(index.get((label, c, agg))) for c in comparison.conditions)]
        for label in comparison.models
        for agg in AGGREGATES
    ]
    return _md_table(header, rows)


def improvement_table(comparison: Comparison, metric: str) -> str:
    """Markdown table of P(candidate > baseline) for one metric: a row per pair, a column per condition."""
    index = {(e.model, e.baseline, e.condition): e for e in comparison.improvements if e.metric == metric}
    pairs = list(dict.fromkeys((e.model, e.baseline) for e in comparison.improvements))
    header = ["model", "baseline", *map(_condition_title, comparison.conditions)]
    rows = [[m, b, *(_cell(index.get((m, b, c))) for c in comparison.conditions)] for m, b in pairs]
    return _md_table(header, rows)


def render_tables(comparison: Comparison) -> str:
    """The metric tables and P(improvement) tables as markdown (what the CLI prints)."""
    parts = []
    for metric, title in METRIC_TITLES.items():
        parts += [f"### {title}: IQM and mean over seeds, 95% CI", metric_table(comparison, metric)]
    if comparison.improvements:
        for metric, title in METRIC_TITLES.items():
            parts += [f"### P(improvement), {title.lower()}", improvement_table(comparison, metric)]
    else:
        parts.append("P(improvement): not computed (needs a RIM model and an LSTM baseline).")
    return "\n\n".join(parts) + "\n"


def summary_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One dict per estimate (IQM, mean, P(improvement)) with the :data:`SUMMARY_FIELDS` keys."""
    return [asdict(e) for e in [*comparison.estimates, *comparison.improvements]]


# ----------------------------------------------------------------------------- report


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` when possible (links in the report keep working)."""
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


def _models_section(comparison: Comparison, out_dir: Path) -> str:
    """Markdown list of the models with their seeds and run folders."""
    lines = []
    for label, runs in comparison.models.items():
        seeds = ", ".join(str(run.seed) for run in runs)
        lines.append(f"- **{label}** (core `{runs[0].core}`), {len(runs)} seeds: {seeds}")
        lines += [f"  - seed {run.seed}: `{_relative(run.path, out_dir)}`" for run in runs]
    return "\n".join(lines)


def render_report(comparison: Comparison, out_dir: Path) -> str:
    """The full ``report.md`` text (run folder paths relative to ``out_dir``)."""
    conditions = ", ".join(f"`{c}`" for c in comparison.conditions if c != ALL_OOD)
    intro = (
        f"# Comparison on split `{comparison.split}`\n\n"
        f"Final deterministic evaluation (`eval.json`) of {len(comparison.runs)} runs, aggregated over seeds per "
        f"model and condition. Conditions: {conditions}. 95% stratified-bootstrap confidence intervals "
        f"(rliable, {comparison.reps} replications, seed {comparison.seed}). IQM is the interquartile mean "
        "(25% trimmed mean; with fewer than 4 seeds it equals the mean). "
        "`all OOD` aggregates every condition except `iid` (runs x conditions, as rliable does). "
        "P(improvement) is the probability that a random seed of the model scores higher than a random seed "
        "of the baseline on the condition (ties count half): 0.5 means no difference."
    )
    parts = [intro, "## Models", _models_section(comparison, out_dir), "## Results", render_tables(comparison).rstrip()]
    parts += [
        "## Figures",
        "Learning curves (mean return over seeds, 95% band): [learning_curves.png](learning_curves.png)\n\n"
        "![learning curves](learning_curves.png)",
        "IQM of the final return and success rate per condition, 95% CI: [ood_bars.png](ood_bars.png)\n\n"
        "![OOD bars](ood_bars.png)",
    ]
    if comparison.notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in comparison.notes)]
    return "\n\n".join(parts) + "\n"


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file next to ``path``, then rename it onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as CSV with the :data:`SUMMARY_FIELDS` columns."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_report(comparison: Comparison, out_dir: str | Path) -> ReportFiles:
    """Write ``report.md``, ``summary.csv``, ``summary.json``, ``learning_curves.png``, ``ood_bars.png``.

    Every file is written to a temporary name and renamed into place.

    :param out_dir: created if missing.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        out, out / "report.md", out / "summary.csv", out / "summary.json", out / "learning_curves.png",
        out / "ood_bars.png",
    )  # fmt: skip
    rows = summary_rows(comparison)
    _atomic_write_text(files.summary_csv, _csv_text(rows))
    _atomic_write_text(files.summary_json, json.dumps(rows, indent=2) + "\n")
    _atomic_write(files.learning_curves, lambda tmp: plot_learning_curves(comparison, tmp))
    _atomic_write(files.ood_bars, lambda tmp: plot_ood_bars(comparison, tmp))
    _atomic_write_text(files.report, render_report(comparison, out))
    log.info("wrote the comparison report to %s", files.report)
    return files


def compare(
    paths: Iterable[str | Path], out_dir: str | Path | None = None, reps: int = 2000, seed: int = 0
) -> tuple[Comparison, ReportFiles]:
    """Load, label and group the runs under ``paths``, compare them and write the report.

    :param out_dir: where the report goes; default ``<first path>/compare``.
    :raises ValueError: if no finished run is found, runs mix splits or a model repeats a seed.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no paths given")
    comparison = compare_runs(group_runs(load_runs(paths)), reps=reps, seed=seed)
    files = write_report(comparison, out_dir if out_dir is not None else paths[0] / "compare")
    return comparison, files


# ----------------------------------------------------------------------------- plots


def _grid(n: int) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` subplots, at most 3 columns."""
    cols = max(1, min(3, n))
    return math.ceil(max(n, 1) / cols), cols


def _save(fig: Any, path: Path) -> None:
    """Render ``fig`` with the Agg canvas to ``path`` as PNG (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110)


def plot_learning_curves(comparison: Comparison, path: Path) -> None:
    """One subplot per condition, a line per model (mean return over seeds) with its 95% band."""
    from matplotlib.figure import Figure

    conditions = [c for c in comparison.conditions if any(curve.condition == c for curve in comparison.curves)]
    rows, cols = _grid(len(conditions))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    if not conditions:
        fig.text(0.5, 0.5, "no learning curves (no ood_curves.json)", ha="center", va="center")
    colors = _model_colors(comparison)
    for i, condition in enumerate(conditions):
        ax = fig.add_subplot(rows, cols, i + 1)
        for curve in (c for c in comparison.curves if c.condition == condition):
            label = f"{curve.model} (n={curve.n_seeds})"
            ax.plot(curve.frames, curve.mean, marker=".", label=label, color=colors[curve.model])
            ax.fill_between(curve.frames, curve.low, curve.high, alpha=0.2, color=colors[curve.model])
        ax.set(title=condition, xlabel="frames", ylabel="mean return")
        ax.legend(fontsize="small")
    _save(fig, path)


def _model_colors(comparison: Comparison) -> dict[str, Any]:
    """A stable colour per model."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(comparison.models)}


def plot_ood_bars(comparison: Comparison, path: Path) -> None:
    """IQM with 95% CI error bars per condition, bars grouped by model; return and success rate panels."""
    from matplotlib.figure import Figure

    labels = list(comparison.models)
    conditions = comparison.conditions
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(conditions))
    colors = _model_colors(comparison)
    fig = Figure(figsize=(max(6.0, 1.3 * len(conditions) * max(1, len(labels)) ** 0.5), 7.0), layout="constrained")
    for row, (metric, title) in enumerate(METRIC_TITLES.items()):
        ax = fig.add_subplot(2, 1, row + 1)
        index = {(e.model, e.condition): e for e in comparison.estimates if e.metric == metric and e.aggregate == "iqm"}
        for i, label in enumerate(labels):
            found = [index.get((label, c)) for c in conditions]
            heights = [e.point if e else np.nan for e in found]
            errors = [[e.point - e.low if e else 0 for e in found], [e.high - e.point if e else 0 for e in found]]
            offset = x - 0.4 + width * (i + 0.5)
            ax.bar(offset, heights, width, yerr=errors, capsize=3, label=label, color=colors[label])
        ax.set_xticks(x, [_condition_title(c) for c in conditions], rotation=30, ha="right")
        ax.set(ylabel=f"IQM {title.lower()}", title=f"{title} (IQM over seeds, 95% CI)")
        ax.legend(fontsize="small")
    _save(fig, path)


# ----------------------------------------------------------------------------- W&B


def logger_config(runs: Sequence[Run], mode: str = "auto") -> dict[str, Any]:
    """The W&B settings for logging a comparison of ``runs``.

    :param mode: ``"auto"`` (the runs' own logger: the first run that logged to W&B, else none),
        ``"offline"``, ``"online"`` or ``"none"``. An explicit mode keeps the runs' project, entity and
        group when they had them.
    :returns: ``{"name": "none"}`` or ``{"name": "wandb", "mode": ..., "project": ..., "entity": ..., "group": ...}``.
    :raises ValueError: on an unknown mode.
    """
    if mode not in ("auto", "offline", "online", "none"):
        raise ValueError(f"wandb mode must be auto, offline, online or none, got {mode!r}")
    wandb_cfgs = [run.logger for run in runs if run.logger.get("name") == "wandb"]
    groups = {cfg.get("group") for cfg in wandb_cfgs}
    if len(groups) > 1:
        log.warning("runs come from W&B groups %s; logging the comparison to the first", sorted(map(str, groups)))
    if mode == "none" or (mode == "auto" and not wandb_cfgs):
        return {"name": "none"}
    base = {"name": "wandb", "mode": "offline", "project": DEFAULT_PROJECT, "entity": None, "group": None}
    base.update(wandb_cfgs[0] if wandb_cfgs else {})
    if mode != "auto":
        base["mode"] = mode
    return base


def log_to_wandb(comparison: Comparison, files: ReportFiles, logger_cfg: dict[str, Any]) -> bool:
    """Log the summary and P(improvement) tables and both figures to a W&B run (``job_type="compare"``).

    The run joins the runs' group and lives in ``files.out_dir``.

    :param logger_cfg: from :func:`logger_config`.
    :returns: whether a W&B run was active (False for logger ``none``, mode ``disabled`` or a failed start).
    """
    mode = str(logger_cfg.get("mode", "disabled"))
    if logger_cfg.get("name", "none") != "wandb" or mode in ("none", "disabled"):
        return False
    try:
        from agents.wandb_logger import WandbRun
    except ImportError as error:
        log.warning("W&B logging unavailable (%s); the comparison was not logged", error)
        return False
    config = {
        "split": comparison.split,
        "reps": comparison.reps,
        "seed": comparison.seed,
        "models": {label: [str(run.path) for run in runs] for label, runs in comparison.models.items()},
    }
    run = WandbRun.start(
        mode=mode, project=str(logger_cfg.get("project") or DEFAULT_PROJECT), run_dir=files.out_dir,
        config=config, name=f"compare-{comparison.split}", group=logger_cfg.get("group"), job_type="compare",
        entity=logger_cfg.get("entity"),
    )  # fmt: skip
    try:
        if run.active:
            run.log_table("summary", [asdict(e) for e in comparison.estimates])
            if comparison.improvements:
                run.log_table("p_improvement", [asdict(e) for e in comparison.improvements])
            run.log_image("learning_curves", files.learning_curves)
            run.log_image("ood_bars", files.ood_bars)
        return run.active
    finally:
        run.finish()
