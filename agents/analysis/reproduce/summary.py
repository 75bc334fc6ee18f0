"""The committed result of a split table: per model x condition numbers, verdicts and modularity, as data.

Built from a :class:`agents.analysis.compare.Comparison` (IQM and mean with 95% bootstrap CIs, P(improvement)
of each RIM model over the LSTM with a CI from resampling whole seeds and a permutation p-value), the table's
declared :class:`~agents.analysis.reproduce.protocol.Protocol` and the selection statistics of its seeds.

Verdicts (:func:`improvement_rows`): the primary endpoint (the protocol's metric on the pooled OOD
conditions) is adjusted with Holm across the table's comparisons (each RIM model against the protocol's baseline
and each of its contrasts); every other row (one condition, or the other metric pooled) is secondary and adjusted
with Holm across the table's conditions per model, baseline and metric (the pooled row of the other metric across
the comparisons). ``better`` / ``worse`` when the adjusted p-value is at most the
protocol's alpha, else ``no difference at 95%``. A condition where every model's mean success rate is at most
:data:`FLOOR` is flagged as unable to separate the models.
"""

from __future__ import annotations

from typing import Any

from agents.analysis.compare import ALL_OOD, IID, METRICS, P_IMPROVEMENT, Comparison, Estimate
from agents.analysis.compare.seed_tests import BETTER as BETTER
from agents.analysis.compare.seed_tests import SAME as SAME
from agents.analysis.compare.seed_tests import WORSE as WORSE
from agents.analysis.compare.seed_tests import holm, min_p
from agents.analysis.compare.seed_tests import verdict as seed_verdict
from agents.analysis.modularity import ModelStats

from .meta import repo_relative
from .protocol import Protocol

FLOOR = 0.02  # every model's mean success rate at most this: the condition cannot separate the models
LEARNED = 0.9  # iid success a seed must reach to count as having learned its training levels
PRIMARY, SECONDARY = "primary", "secondary"
CSV_FIELDS = (
    "model", "baseline", "condition", "metric", "aggregate", "point", "low", "high", "n_seeds", "baseline_seeds",
    "seeds", "values", "p_value", "p_holm", "endpoint", "verdict",
)  # fmt: skip


def _interval(estimate: Estimate) -> dict[str, Any]:
    """``point`` and ``[low, high]`` of an estimate."""
    return {"point": estimate.point, "ci": [estimate.low, estimate.high]}


def model_cells(comparison: Comparison) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model, condition and metric: seeds, per-seed values, mean and IQM with their 95% CIs.

    :returns: ``{model: {condition: {metric: {...}}}}``; :data:`agents.analysis.compare.ALL_OOD` cells have no
        per-seed values (they pool runs x conditions).
    """
    index = {(e.model, e.condition, e.metric, e.aggregate): e for e in comparison.estimates}
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for label, runs in comparison.models.items():
        cells[label] = {}
        for condition in comparison.conditions:
            by_metric = {}
            for metric in METRICS:
                iqm, mean = index.get((label, condition, metric, "iqm")), index.get((label, condition, metric, "mean"))
                if iqm is None or mean is None:
                    continue
                has = [run for run in runs if condition in run.scores]
                by_metric[metric] = {
                    "n_seeds": iqm.n_seeds,
                    "seeds": None if condition == ALL_OOD else [run.seed for run in has],
                    "values": None if condition == ALL_OOD else [run.scores[condition][metric] for run in has],
                    "mean": _interval(mean),
                    "iqm": _interval(iqm),
                }
            if by_metric:
                cells[label][condition] = by_metric
    return cells


def _collapse_note(modularity: dict[str, ModelStats], model: str, condition: str) -> str:
    """``""``, or how many seeds of ``model`` have a collapsed selection on ``condition``."""
    stats = modularity.get(model)
    agg = next((a for a in stats.aggregate if a["condition"] == condition), None) if stats else None
    if agg is None or not agg["collapsed_runs"]:
        return ""
    if agg["collapsed_runs"] == agg["n_runs"]:
        return "selection collapsed in every seed: in effect a smaller LSTM"
    return f"selection collapsed in {agg['collapsed_runs']}/{agg['n_runs']} seeds"


def _family(estimate: Estimate) -> tuple[Any, ...]:
    """The Holm family of an estimate: the primary endpoint's rows together (every model and baseline), a pooled
    row of the other metric with its metric's, a single condition's with the same model, baseline and metric."""
    if estimate.condition == ALL_OOD:
        return (ALL_OOD, estimate.metric)
    return (estimate.model, estimate.baseline, estimate.metric)


def improvement_rows(
    comparison: Comparison, modularity: dict[str, ModelStats], protocol: Protocol
) -> list[dict[str, Any]]:
    """P(improvement) of every RIM model over the protocol's baseline and contrasts per condition and metric, with
    its p-value, its Holm-adjusted p-value and its verdict (see the module docstring).

    :returns: dicts with ``model``, ``baseline``, ``condition``, ``metric``, ``point``, ``ci``, ``n_seeds``,
        ``baseline_seeds``, ``p_value``, ``p_holm``, ``endpoint`` (:data:`PRIMARY` or :data:`SECONDARY`),
        ``verdict`` and ``modularity`` (a collapse note or ``""``).
    """
    wanted = set(protocol.baselines)
    estimates = [e for e in comparison.improvements if e.aggregate == P_IMPROVEMENT and e.baseline in wanted]
    families: dict[tuple[Any, ...], list[int]] = {}
    for i, e in enumerate(estimates):
        families.setdefault(_family(e), []).append(i)
    adjusted = [1.0] * len(estimates)
    for members in families.values():
        for i, p_value in zip(members, holm([estimates[i].p_value or 1.0 for i in members]), strict=True):
            adjusted[i] = p_value
    return [
        {
            "model": e.model,
            "baseline": e.baseline,
            "condition": e.condition,
            "metric": e.metric,
            **_interval(e),
            "n_seeds": e.n_seeds,
            "baseline_seeds": e.baseline_seeds,
            "p_value": e.p_value,
            "p_holm": adjusted[i],
            "min_p": min_p(e.n_seeds, e.baseline_seeds),
            "endpoint": PRIMARY if e.condition == ALL_OOD and e.metric == protocol.metric else SECONDARY,
            "verdict": seed_verdict(e.point, adjusted[i], protocol.alpha),
            "modularity": _collapse_note(modularity, e.model, e.condition),
        }
        for i, e in enumerate(estimates)
    ]


def floor_conditions(comparison: Comparison) -> list[str]:
    """Conditions on which every model's mean success rate is at most :data:`FLOOR` (cannot separate)."""
    means: dict[str, list[float]] = {}
    for e in comparison.estimates:
        if e.metric == "success" and e.aggregate == "mean" and e.condition != ALL_OOD:
            means.setdefault(e.condition, []).append(e.point)
    return [c for c in comparison.conditions if c in means and max(means[c]) <= FLOOR]


def learned_counts(comparison: Comparison) -> dict[str, dict[str, int]]:
    """Per model, how many seeds reach iid success >= :data:`LEARNED` (``{"learned": k, "seeds": n}``)."""
    out = {}
    for label, runs in comparison.models.items():
        scored = [run for run in runs if IID in run.scores]
        out[label] = {"learned": sum(run.scores[IID]["success"] >= LEARNED for run in scored), "seeds": len(scored)}
    return out


def modularity_data(modularity: dict[str, ModelStats]) -> dict[str, Any]:
    """Per RIM model: seeds and the per-condition aggregates (the per-seed rows are in ``selection.csv``)."""
    return {
        label: {"seeds": stats.seeds, "aggregate": {agg["condition"]: agg for agg in stats.aggregate}}
        for label, stats in modularity.items()
    }


def table_summary(
    table: str,
    comparison: Comparison,
    modularity: dict[str, ModelStats],
    model_info: dict[str, dict[str, Any]],
    notes: list[str],
    protocol: Protocol,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything ``summary.json`` holds for a split table.

    :param model_info: per model extra facts (preset, core, learning rate, sweep folder).
    :param notes: caveats beside the comparison's own notes.
    :param protocol: the table's declared primary endpoint and level.
    :param extra: further entries of a table (the modularity tables' selection bar and remedy choice).
    """
    cells = model_cells(comparison)
    improvements = improvement_rows(comparison, modularity, protocol)
    return {
        "table": table,
        "split": comparison.split,
        "conditions": comparison.conditions,
        "protocol": {
            "metric": protocol.metric,
            "baseline": protocol.baseline,
            "contrasts": list(protocol.contrasts),
            "pooled": list(protocol.pooled),
            "alpha": protocol.alpha,
            "declared": protocol.declared,
            "test": "two-sided permutation test of P(model > baseline) over whole seeds; Holm-adjusted",
        },
        "primary": [row for row in improvements if row["endpoint"] == PRIMARY],
        "bootstrap": {
            "reps": comparison.reps,
            "seed": comparison.seed,
            "confidence": 0.95,
            "resampling": "one condition: rliable's stratified bootstrap over seeds; all_ood and P(improvement): "
            "whole seeds",
        },
        "models": {
            label: {
                **model_info.get(label, {}),
                "runs": [repo_relative(run.path) for run in runs],
                "seeds": [run.seed for run in runs],
                "conditions": cells[label],
            }
            for label, runs in comparison.models.items()
        },
        "improvements": improvements,
        "cannot_separate": floor_conditions(comparison),
        "iid_learned": learned_counts(comparison),
        "modularity": modularity_data(modularity),
        "notes": [*comparison.notes, *notes],
        **(extra or {}),
    }


def csv_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (:data:`CSV_FIELDS`) of a :func:`table_summary`: IQM and mean cells, then P(improvement) rows."""
    rows = []
    for label, model in summary["models"].items():
        for condition, by_metric in model["conditions"].items():
            for metric, cell in by_metric.items():
                for aggregate in ("iqm", "mean"):
                    rows.append(
                        {
                            "model": label,
                            "condition": condition,
                            "metric": metric,
                            "aggregate": aggregate,
                            "point": cell[aggregate]["point"],
                            "low": cell[aggregate]["ci"][0],
                            "high": cell[aggregate]["ci"][1],
                            "n_seeds": cell["n_seeds"],
                            "seeds": ";".join(map(str, cell["seeds"] or [])),
                            "values": ";".join(f"{v:.6g}" for v in cell["values"] or []),
                        }
                    )
    for row in summary["improvements"]:
        rows.append(
            {
                **{
                    k: row[k]
                    for k in (
                        "model",
                        "baseline",
                        "condition",
                        "metric",
                        "n_seeds",
                        "baseline_seeds",
                        "p_value",
                        "p_holm",
                        "endpoint",
                        "verdict",
                    )
                },
                "aggregate": P_IMPROVEMENT,
                "point": row["point"],
                "low": row["ci"][0],
                "high": row["ci"][1],
            }
        )
    return rows
