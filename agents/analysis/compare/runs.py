"""Finished run folders: finding and loading them, labelling them by their settings, grouping them into models.

A run folder (written by :func:`agents.experiment.run.train`) holds ``config.yaml`` and ``eval.json``
(the final deterministic evaluation of every test condition), and usually ``ood_curves.json``
(periodic evaluations during training) and ``metrics.csv`` (per update; a RIM core's selection statistics of
each rollout, ``sel/rollout/<statistic>``, are read from it for the modularity curves).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

log = logging.getLogger("agents.analysis.compare")  # the package logger, as before the split into modules

METRICS = {"return": "mean_return", "success": "mean_success"}
CORE_ORDER = ("lstm", "gru", "rim", "rim_gru")
_IGNORED_TOP_KEYS = frozenset(
    {"seed", "logger", "eval", "device", "torch_threads", "progress_bar", "resume", "hydra", "checkpoint"}
)
_IGNORED_LEAVES = frozenset({"run_name", "run_dir", "out_dir", "output_dir", "dir", "path"})
_SHORT_KEYS = {"model.num_units": "u", "model.k": "k", "model.hidden_size": "h", "agent.name": ""}
_GROUP_ORDER = {"model": 0, "agent": 1}
_SKIPPED_DIRS = frozenset({"wandb", "__pycache__"})
SELECTION_CURVES: tuple[str, ...] = ("switch_rate", "usage_entropy", "collapse")
"""Selection statistics of the training rollouts (``sel/rollout/<statistic>`` of ``metrics.csv``) read as curves."""
MAX_CURVE_POINTS = 50
"""Points kept of each selection curve (evenly spaced updates, the last included)."""


@dataclass(frozen=True)
class Run:
    """One finished run folder.

    :param path: the run folder.
    :param config: the resolved ``config.yaml`` as a plain dict.
    :param scores: ``{condition: {"return": ..., "success": ...}}`` of the final deterministic evaluation,
        conditions in ``eval.json`` order.
    :param curves: ``{condition: {frames: mean_return}}`` from ``ood_curves.json`` (empty if missing).
    :param selection: ``{statistic: {frames: value}}`` of the training rollouts (:data:`SELECTION_CURVES`, from
        ``metrics.csv``; empty for non-RIM cores and runs from before these statistics).
    """

    path: Path
    config: dict[str, Any]
    scores: dict[str, dict[str, float]]
    curves: dict[str, dict[int, float]]
    selection: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def core(self) -> str:
        """The recurrent core (``model.core``)."""
        return str(self.config["model"]["core"])

    @property
    def model_name(self) -> str:
        """The model's name (``model.name``: its preset, e.g. ``rim_sw``); runs saved before the key
        existed: the core."""
        name = self.config["model"].get("name")
        return str(name) if name else self.core

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
    return Run(path=path, config=config, scores=scores, curves=curves, selection=selection_curves(path / "metrics.csv"))


def selection_curves(path: Path) -> dict[str, dict[int, float]]:
    """``{statistic: {frames: value}}`` of :data:`SELECTION_CURVES` in a ``metrics.csv`` (empty when it has none),
    thinned to :data:`MAX_CURVE_POINTS` updates."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for name in SELECTION_CURVES:
        points = [(int(r["frames"]), float(r[f"sel/rollout/{name}"])) for r in rows if r.get(f"sel/rollout/{name}")]
        if points:
            keep = np.unique(np.linspace(0, len(points) - 1, min(MAX_CURVE_POINTS, len(points))).round().astype(int))
            out[name] = dict(points[i] for i in keep)
    return out


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
    if parts[0] in _IGNORED_TOP_KEYS or dotted in ("model.core", "model.name"):
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
    """A model label per run: the model's name (:attr:`Run.model_name`, its preset) plus every setting
    that differs between runs; a model setting counts only where it differs between runs of the same
    name (the overrides on top of a preset: ``rim_sw`` next to ``brims``, ``rim u6 k4`` next to ``rim``).

    A config key joins the label when the runs that have it hold more than one value for it, or
    when it lies under an option group that other runs leave null (``agent.fast_slow``: plain runs
    get no part, fast/slow ones their settings; null settings are not shown) (``seed``, ``logger``,
    ``eval`` budgets, device and path-like keys never do), model settings
    first, then agent settings, then the rest, e.g.
    ``rim u6 k4`` in a ``num_units`` x ``k`` grid or ``lstm a2c`` when PPO and A2C runs are mixed.
    """
    flats = [_flatten(run.config) for run in runs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys and _is_label_key(k))
    names = [run.model_name for run in runs]
    varying = {name: [k for k in keys if _varies(k, name, names, flats)] for name in names}
    # an option group that is null in some runs and set in others (agent.fast_slow): its set keys
    # join the label when the other keys leave such runs with the same label
    nulls = {k for flat in flats for k, v in flat.items() if v is None}
    shown = {k for held in varying.values() for k in held}
    switched = [k for k in keys if k not in shown and any(k.startswith(f"{null}.") for null in nulls)]
    labels = _labels(runs, flats, varying)
    settings: dict[str, set[str]] = {}
    for label, flat in zip(labels, flats, strict=True):
        held = {k: flat[k] for k in switched if flat.get(k) is not None}
        settings.setdefault(label, set()).add(json.dumps(held, sort_keys=True))
    if any(len(held) > 1 for held in settings.values()):
        labels = _labels(runs, flats, {name: held + switched for name, held in varying.items()})
    return labels


def _varies(key: str, name: str, names: list[str], flats: list[dict[str, Any]]) -> bool:
    """Whether ``key`` holds more than one value among the runs that have it: among the runs named
    ``name`` for a model key (an override on top of the preset), among all runs for any other key."""
    among = [f for n, f in zip(names, flats, strict=True) if n == name or not key.startswith("model.")]
    return len({json.dumps(f[key], sort_keys=True) for f in among if key in f}) > 1


def _labels(runs: Sequence[Run], flats: list[dict[str, Any]], keys: dict[str, list[str]]) -> list[str]:
    """The model name plus the non-null settings of ``keys[model name]`` that each run holds, model keys first."""
    labels = []
    for run, flat in zip(runs, flats, strict=True):
        held = sorted(keys[run.model_name], key=lambda k: _GROUP_ORDER.get(k.split(".")[0], len(_GROUP_ORDER)))
        labels.append(" ".join([run.model_name, *(_label_part(k, flat[k]) for k in held if flat.get(k) is not None)]))
    return labels


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
