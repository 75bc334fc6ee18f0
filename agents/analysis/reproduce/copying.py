"""The committed per-seed record of a copying table, and how a call's new runs join it.

Run folders of the copying task (:mod:`agents.experiment.copying`) are not committed, so a table grows
from its record: two compact CSV files beside its ``summary.json``:

- ``seeds.csv``: one row per model x seed x test blank length: the final test metrics
  (:data:`~agents.experiment.copying.METRICS`), the model's parameter count, its time per step (wall
  and CPU) and ``source`` (the run folder it was read from);
- ``curves.csv``: one row per model x seed x periodic evaluation x test blank length: the training CE
  since the previous evaluation and the test metrics on the curve's test sets.

A folder written before the record existed has only ``summary.json``: its per-seed final values are read
from there (learning curves were not kept, and every seed gets the model's mean time per step).
:func:`merge` adds new runs to the committed ones; a seed held by both must have the same final values
(training on CPU is deterministic for a fixed seed), else the call is refused.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.experiment.atomic import write_csv
from agents.experiment.copying import METRICS

SCORES, CURVES = "seeds.csv", "curves.csv"
SCORE_FIELDS = ("model", "seed", "blank", *METRICS, "parameters", "seconds_per_step", "cpu_seconds_per_step", "source")
CURVE_FIELDS = ("model", "seed", "step", "blank", "train_ce", *METRICS)


class CopyingTableError(ValueError):
    """A call's runs cannot join the committed copying table (other settings, or other values for a seed)."""


@dataclass
class CopyingRecord:
    """The committed runs of a copying table.

    :param settings: the table's settings (:class:`~agents.experiment.copying.CopySettings` as a dict), or
        ``None`` for a folder without a table.
    :param results: one dict per model and seed, shaped as :func:`agents.experiment.copying.train_run`'s
        results (``curve`` empty where it was not kept) plus ``source``.
    :param meta: the folder's ``meta.json`` (empty when it has none).
    """

    settings: dict[str, Any] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_record(folder: Path) -> CopyingRecord:
    """The copying table committed in ``folder``: from ``seeds.csv``/``curves.csv``, else ``summary.json``.

    :raises CopyingTableError: ``summary.json`` is not a copying table's.
    """
    summary = _read_json(folder / "summary.json")
    meta = _read_json(folder / "meta.json")
    if not summary:
        return CopyingRecord(meta=meta)
    if summary.get("table") != "copying":
        raise CopyingTableError(f"{folder / 'summary.json'} is not a copying table's (table {summary.get('table')!r})")
    results = _from_csv(folder) if (folder / SCORES).is_file() else _from_summary(summary, meta)
    for result in results:
        result["settings"] = summary["settings"]
    return CopyingRecord(summary["settings"], results, meta)


def _from_csv(folder: Path) -> list[dict[str, Any]]:
    """Results rebuilt from ``seeds.csv`` and ``curves.csv``."""
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for row in _read_csv(folder / SCORES):
        key = (row["model"], int(row["seed"]))
        result = results.setdefault(
            key,
            {"model": key[0], "seed": key[1], "final": {}, "curve": [], "parameters": int(row["parameters"]),
             "seconds_per_step": float(row["seconds_per_step"]),
             "cpu_seconds_per_step": float(row["cpu_seconds_per_step"]), "source": row["source"]},
        )  # fmt: skip
        result["final"][row["blank"]] = {m: float(row[m]) for m in METRICS}
    points: dict[tuple[str, int, int], dict[str, Any]] = {}
    for row in _read_csv(folder / CURVES) if (folder / CURVES).is_file() else []:
        key = (row["model"], int(row["seed"]), int(row["step"]))
        point = points.setdefault(key, {"step": key[2], "train_ce": float(row["train_ce"])})
        point.update({f"{m}_{row['blank']}": float(row[m]) for m in METRICS})
    for (model, seed, _), point in points.items():
        if (model, seed) in results:
            results[(model, seed)]["curve"].append(point)
    return list(results.values())


def _from_summary(summary: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Results rebuilt from a ``summary.json`` written before ``seeds.csv`` existed (no curves; time per
    step: the model's mean over its seeds)."""
    source = f"run folder not kept; values from summary.json of {meta.get('date', '?')} (commit "
    source += f"{str(meta.get('commit', ''))[:12] or 'unknown'}; time per step: the model's mean)"
    results = []
    for name, model in summary["models"].items():
        for index, seed in enumerate(model["seeds"]):
            final = {blank: {m: cells[m]["values"][index] for m in METRICS} for blank, cells in model["final"].items()}
            results.append(
                {"model": name, "seed": int(seed), "final": final, "curve": [], "parameters": model["parameters"],
                 "seconds_per_step": model["seconds_per_step"], "cpu_seconds_per_step": model["cpu_seconds_per_step"],
                 "source": source}
            )  # fmt: skip
    return results


def check_settings(committed: dict[str, Any] | None, given: dict[str, Any], folder: Path) -> None:
    """Refuse to add runs of other settings to a committed table.

    :raises CopyingTableError: naming every setting that differs, the table's value and this call's.
    """
    if committed is None:
        return
    given = json.loads(json.dumps(given))  # tuples as lists, as committed
    keys = list(dict.fromkeys([*committed, *given]))
    differ = [f"{key}={committed.get(key)!r}" for key in keys if committed.get(key) != given.get(key)]
    if differ:
        asked = [f"{key}={given.get(key)!r}" for key in keys if committed.get(key) != given.get(key)]
        raise CopyingTableError(
            f"the table in {folder} was trained with {', '.join(differ)}; this call asks for {', '.join(asked)}: "
            "pass the table's settings to add seeds to it, or another --out"
        )


def _same_final(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    return all(math.isclose(a[blank][m], b[blank][m], rel_tol=1e-9, abs_tol=1e-12) for blank in a for m in METRICS)


def merge(held: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The committed results with this call's added (models in first-seen order, seeds sorted).

    A seed in both keeps this call's run (it has its learning curve and its own time per step) when the
    final values agree.

    :raises CopyingTableError: a seed in both with other final values (naming model, seed, blank and metric).
    """
    by_key = {(r["model"], int(r["seed"])): dict(r) for r in held}
    for result in new:
        key = (result["model"], int(result["seed"]))
        if key in by_key and not _same_final(by_key[key]["final"], result["final"]):
            old, now = by_key[key]["final"], result["final"]
            blank = next((b for b in now if b not in old or old[b] != now[b]), next(iter(now)))
            raise CopyingTableError(
                f"{key[0]} seed {key[1]} is in the table with CE {old.get(blank, {}).get('ce')!r} at blank {blank}, "
                f"this run gives {now[blank]['ce']!r}: training did not reproduce it (another machine or library "
                "version?); add only seeds the table lacks (--first-seed)"
            )
        by_key[key] = dict(result)
    order = list(dict.fromkeys([*(r["model"] for r in held), *(r["model"] for r in new)]))
    return sorted(by_key.values(), key=lambda r: (order.index(r["model"]), int(r["seed"])))


def record_rows(results: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of ``seeds.csv`` and ``curves.csv`` (:data:`SCORE_FIELDS`, :data:`CURVE_FIELDS`) of ``results``."""
    scores, curves = [], []
    for r in results:
        base = {"model": r["model"], "seed": r["seed"]}
        for blank, metrics in r["final"].items():
            scores.append({**base, "blank": blank, **{m: metrics[m] for m in METRICS}, "parameters": r["parameters"],
                           "seconds_per_step": r["seconds_per_step"], "cpu_seconds_per_step": r["cpu_seconds_per_step"],
                           "source": r.get("source", "")})  # fmt: skip
        for point in r["curve"]:
            for blank in r["final"]:
                values = {m: point[f"{m}_{blank}"] for m in METRICS}
                curves.append({**base, "step": point["step"], "blank": blank, "train_ce": point["train_ce"], **values})
    return scores, curves


def save_record(results: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """Write ``seeds.csv`` and ``curves.csv`` of ``results`` into ``folder`` (atomically)."""
    scores, curves = record_rows(results)
    write_csv(folder / SCORES, scores, SCORE_FIELDS)
    write_csv(folder / CURVES, curves, CURVE_FIELDS)
    return [folder / SCORES, folder / CURVES]
