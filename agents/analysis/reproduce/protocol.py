"""A table's declared protocol: its primary endpoint and the rule behind its verdicts, written before its runs.

``scripts/reproduce/<table>/protocol.yaml``::

    primary:
      metric: return              # final deterministic return (or success)
      baseline: lstm              # every RIM-family model of the table is compared with it
      pooled: [doorkey_6x6, ...]  # the OOD conditions pooled, by name (conditions where every model scores 0 left out)
    alpha: 0.05
    declared: "..."               # when, and before which runs, it was written

The verdict rule (:mod:`agents.analysis.compare.seed_tests`): a two-sided permutation test over whole seeds of
P(model > baseline). On the primary endpoint the p-values of the table's RIM-family models are adjusted with
Holm across those models; on single conditions (secondary, both metrics) with Holm across the table's
conditions, per model and metric. A verdict is "better" / "worse" when the adjusted p-value is at most
``alpha``, else "no difference at 95%".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from agents.analysis.compare import IID, METRICS
from envs.splits import load_split

from .tables import RESULTS_DIR, ReproduceError

PROTOCOL_FILE = "protocol.yaml"


@dataclass(frozen=True)
class Protocol:
    """The declared primary endpoint of a table.

    :param table: the table.
    :param metric: a key of :data:`agents.analysis.compare.METRICS`.
    :param baseline: the model every RIM-family model is compared with.
    :param pooled: the OOD conditions pooled into the primary endpoint, by name.
    :param alpha: the level of every verdict.
    :param declared: when and before which runs the protocol was written.
    """

    table: str
    metric: str
    baseline: str
    pooled: tuple[str, ...]
    alpha: float
    declared: str


def load_protocol(table: str, split: str, results: Path = RESULTS_DIR) -> Protocol:
    """Read and check ``<results>/<table>/protocol.yaml``.

    :raises ReproduceError: no such file, or a metric, condition or level that is not valid, saying which.
    """
    path = results / table / PROTOCOL_FILE
    if not path.is_file():
        raise ReproduceError(f"table {table!r} has no declared primary endpoint: write {path} before its runs")
    data = yaml.safe_load(path.read_text()) or {}
    primary = data.get("primary") or {}
    metric, baseline = primary.get("metric"), primary.get("baseline")
    pooled = tuple(primary.get("pooled") or ())
    if metric not in METRICS:
        raise ReproduceError(f"{path}: primary.metric must be one of {list(METRICS)}, got {metric!r}")
    if not isinstance(baseline, str) or not baseline:
        raise ReproduceError(f"{path}: primary.baseline must name a model, got {baseline!r}")
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
    return Protocol(table, str(metric), baseline, pooled, alpha, str(data.get("declared", "")))
