"""A table's declared protocol: its primary endpoint and the rule behind its verdicts, written before its runs.

``scripts/reproduce/<table>/protocol.yaml``::

    primary:
      metric: return              # final deterministic return (or success)
      baseline: lstm              # every RIM-family model of the table is compared with it
      contrasts: [rim]            # optional: further models every other RIM-family model is compared with
      pooled: [doorkey_6x6, ...]  # the OOD conditions pooled, by name (conditions where every model scores 0 left out)
    alpha: 0.05
    declared: "..."               # when, and before which runs, it was written

The verdict rule (:mod:`agents.analysis.compare.seed_tests`): a two-sided permutation test over whole seeds of
P(model > baseline). On the primary endpoint the p-values of the table's comparisons (every RIM-family model
against the baseline and against each contrast other than itself) are adjusted together with Holm; on single
conditions (secondary, both metrics) with Holm across the table's conditions, per model, baseline and metric.
A verdict is "better" / "worse" when the adjusted p-value is at most ``alpha``, else "no difference at 95%".
A contrast answers a second question beside "than the LSTM": the ``modularity`` tables compare every remedy
against a frozen selection with ``rim`` too ("than the fixed selection").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from agents.analysis.compare import IID, METRICS
from envs.splits import load_split

from .tables import REPO, RESULTS_DIR, ReproduceError

PROTOCOL_FILE = "protocol.yaml"
MODEL_PRESETS = REPO / "configs" / "model"  # a baseline or contrast names one of these presets


@dataclass(frozen=True)
class Protocol:
    """The declared primary endpoint of a table.

    :param table: the table.
    :param metric: a key of :data:`agents.analysis.compare.METRICS`.
    :param baseline: the model every RIM-family model is compared with.
    :param pooled: the OOD conditions pooled into the primary endpoint, by name.
    :param alpha: the level of every verdict.
    :param declared: when and before which runs the protocol was written.
    :param contrasts: further models every other RIM-family model is compared with (none: the LSTM only).
    """

    table: str
    metric: str
    baseline: str
    pooled: tuple[str, ...]
    alpha: float
    declared: str
    contrasts: tuple[str, ...] = ()

    @property
    def baselines(self) -> tuple[str, ...]:
        """The baseline, then the contrasts: every model a RIM-family model of the table is compared with."""
        return (self.baseline, *self.contrasts)


def _baselines(path: Path, baseline: object, contrasts: object, presets: Path) -> tuple[str, tuple[str, ...]]:
    """``primary.baseline`` and ``primary.contrasts`` (missing: none) checked: distinct model presets.

    :raises ReproduceError: a baseline that is not a name, contrasts that are not a list of names, a repeated
        name, or a name without a preset in ``presets``.
    """
    if not isinstance(baseline, str) or not baseline:
        raise ReproduceError(f"{path}: primary.baseline must name a model, got {baseline!r}")
    contrasts = [] if contrasts is None else contrasts
    if not isinstance(contrasts, list) or not all(isinstance(name, str) and name for name in contrasts):
        raise ReproduceError(f"{path}: primary.contrasts must be a list of model names, got {contrasts!r}")
    names = [baseline, *contrasts]
    if len(set(names)) != len(names):
        raise ReproduceError(f"{path}: primary.baseline and primary.contrasts must be distinct models, got {names}")
    unknown = [name for name in names if not (presets / f"{name}.yaml").is_file()]
    if unknown:
        raise ReproduceError(
            f"{path}: primary.baseline and primary.contrasts must name model presets of {presets}, got {unknown} "
            f"(valid: {sorted(p.stem for p in presets.glob('*.yaml'))})"
        )
    return baseline, tuple(contrasts)


def load_protocol(table: str, split: str, results: Path = RESULTS_DIR, presets: Path = MODEL_PRESETS) -> Protocol:
    """Read and check ``<results>/<table>/protocol.yaml``.

    :param presets: the model presets a baseline or contrast must name (``configs/model``).
    :raises ReproduceError: no such file, or a metric, baseline, contrast, condition or level that is not valid,
        saying which.
    """
    path = results / table / PROTOCOL_FILE
    if not path.is_file():
        raise ReproduceError(f"table {table!r} has no declared primary endpoint: write {path} before its runs")
    data = yaml.safe_load(path.read_text()) or {}
    primary = data.get("primary") or {}
    metric = primary.get("metric")
    pooled = tuple(primary.get("pooled") or ())
    if metric not in METRICS:
        raise ReproduceError(f"{path}: primary.metric must be one of {list(METRICS)}, got {metric!r}")
    baseline, contrasts = _baselines(path, primary.get("baseline"), primary.get("contrasts"), presets)
    valid = [c for c in load_split(split).test if c != IID]
    unknown = [c for c in pooled if c not in valid]
    if len(pooled) < 2 or unknown:
        raise ReproduceError(
            f"{path}: primary.pooled must list at least two OOD conditions of split {split!r} {valid}, "
            f"got {list(pooled)}" + (f" (unknown: {unknown})" if unknown else "")
        )
    alpha = data.get("alpha", 0.05)
    if not isinstance(alpha, float) or not 0 < alpha < 1:
        raise ReproduceError(f"{path}: alpha must be a number in (0, 1), got {alpha!r}")
    return Protocol(table, str(metric), baseline, pooled, alpha, str(data.get("declared", "")), contrasts)
