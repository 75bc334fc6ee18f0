"""The rules of the modularity tables (issue 26 item 5), stated before their runs.

The RIM core picks ``k`` of its units per step by a top-k on a ranking score, and in the earlier tables that
choice froze onto a fixed set. Each remedy of :mod:`rims.remedies` is a family of candidate presets
(:data:`~agents.analysis.reproduce.tables.REMEDY_FAMILIES`); three tables ask whether one makes the selection used
without costing the task. Every number these rules read is a post-hoc activation statistic
(:func:`agents.analysis.modularity.run_stats`: deterministic episodes, :data:`STATS_EPISODES` per condition) or a
final deterministic evaluation.

Definitions, per trained seed and condition:

- *learns*: its success rate is at least :data:`LEARNED` (0.9);
- *used*: every unit is active in at least :data:`USED_LOW` (5%) and at most :data:`USED_HIGH` (95%) of the
  steps, and the within-episode switch rate is at least :data:`USED_SWITCH` (0.05) (the issue's bar).

**Stage 1, the coefficient of each family** (:func:`choose_coefficients`, table ``modularity_tune``): doorkey,
the doorkey budget, seeds 1000 and 1001, every candidate; the statistics of the ``validation`` condition only
(levels of the training distribution that no table reports). Per seed: learns and used on validation. Per
candidate: its score is the number of seeds that learn *and* are used. Per family: the candidate with the highest
score; ties go to the higher worst-seed validation return, then to the smaller coefficient (the first in grid
order). A family with one candidate takes it. A family is chosen for only when each of its candidates has every
seed of the call.

**Stage 2, the screen and its bar** (:func:`seed_bars`, table ``modularity``): per model and seed, the *bar* is
met when the seed learns on ``iid`` (final evaluation) and is used on ``iid`` and on every OOD condition; on
validation levels, when it learns and is used on ``validation`` (its post-hoc statistics).

**Stage 3, the remedy carried on** (:func:`choose_remedy`): the family whose stage-2 candidate has the most of the
table's stage-2 seeds meeting the bar *on validation levels*; ties go to the higher mean validation return, then to
the first family in :data:`~agents.analysis.reproduce.tables.REMEDY_FAMILIES` order. Test levels (iid and OOD)
never choose anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.analysis.compare import IID
from envs.splits import VALIDATION

from .seed_store import derived_case
from .summary import LEARNED

USED_LOW, USED_HIGH = 0.05, 0.95  # every unit active in this share of the steps or more, and this share or less
USED_SWITCH = 0.05  # and a within-episode switch rate of at least this
STATS_EPISODES = 100  # deterministic episodes per condition of the statistics the choices read
USED_TEXT = (
    f"every unit active in {USED_LOW:.0%}-{USED_HIGH:.0%} of the steps and a within-episode switch rate >= "
    f"{USED_SWITCH}"
)
COEFFICIENT_RULE = (
    f"per seed, learns = validation success >= {LEARNED} and used = {USED_TEXT} on the validation levels; per "
    "candidate, score = seeds that learn and are used; per family, the highest score, ties to the higher worst-seed "
    "validation return, then to the smaller coefficient (grid order); a family with one candidate takes it"
)
BAR_RULE = (
    f"a seed meets the bar when its iid success is >= {LEARNED} and, on iid and on every OOD condition, {USED_TEXT}; "
    f"on validation levels, when its validation success is >= {LEARNED} and, on validation, {USED_TEXT}"
)
REMEDY_RULE = (
    "the family whose candidate has the most of the table's stage-2 seeds meeting the bar on validation levels; "
    "ties to the higher mean validation return, then to the first family in order; never an OOD number"
)


def learns(success: float | None) -> bool | None:
    """Whether a success rate reaches :data:`LEARNED` (``None``: not recorded)."""
    return None if success is None else bool(success >= LEARNED)


def used(unit_frequency: Sequence[float], switch_rate: float) -> bool:
    """Whether a selection is used: every unit active in :data:`USED_LOW`-:data:`USED_HIGH` of the steps and a
    within-episode switch rate of at least :data:`USED_SWITCH`.

    :param unit_frequency: ``(R,)`` share of the steps each unit was active.
    :raises ValueError: no unit frequencies.
    """
    if len(unit_frequency) == 0:
        raise ValueError("a selection's use needs the unit frequencies, got none")
    return bool(all(USED_LOW <= f <= USED_HIGH for f in unit_frequency) and switch_rate >= USED_SWITCH)


def choose_coefficients(
    rows: Sequence[Mapping[str, Any]], families: Mapping[str, Sequence[str]], seeds: Sequence[int]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Stage 1: per family, the candidate the rule of this module chooses.

    :param rows: one per candidate and seed: ``model``, ``seed``, ``validation_return``, ``learns`` and ``used``.
    :param families: ``{family: candidates in grid order}`` (the candidates this call ran).
    :param seeds: the seeds every candidate of a family needs before the family is chosen for.
    :returns: ``({model: {"score", "worst_return", "mean_return", "seeds"}}, {family: chosen model})``.
    """
    scores: dict[str, dict[str, Any]] = {}
    for model in (m for candidates in families.values() for m in candidates):
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        returns = [float(r["validation_return"]) for r in mine]
        scores[model] = {
            "score": sum(bool(r["learns"]) and bool(r["used"]) for r in mine),
            "worst_return": min(returns),
            "mean_return": float(np.mean(returns)),
            "seeds": sorted(int(r["seed"]) for r in mine),
        }
    choice = {}
    for family, candidates in families.items():
        complete = [m for m in candidates if m in scores and set(seeds) <= set(scores[m]["seeds"])]
        if candidates and len(complete) == len(candidates):
            # max keeps the first of equal keys: the grid's smaller coefficient
            choice[family] = max(candidates, key=lambda m: (scores[m]["score"], scores[m]["worst_return"]))
    return scores, choice


def _number(cell: Any) -> float | None:
    """A float from a record's cell; ``None`` for an empty or unparsable one."""
    try:
        return float(cell)
    except (TypeError, ValueError):
        return None


def _condition_usage(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The selection of one ``selection.csv`` row: least and most active unit's share of steps, switch rate, case
    and ``used``. A row harvested before the unit frequencies were recorded still says "not used" when its switch
    rate is below :data:`USED_SWITCH` or a unit was active in more than 99% or fewer than 1% of the steps (its
    collapse reasons); otherwise, and without a row, ``None``."""
    if row is None:
        return None
    switch = float(row["switch_rate"])
    case = derived_case(row)
    if str(row.get("unit_frequency") or "").strip():
        freqs = [float(f) for f in str(row["unit_frequency"]).split()]
        return {"min_frequency": min(freqs), "max_frequency": max(freqs), "switch_rate": switch, "case": case,
                "used": used(freqs, switch)}  # fmt: skip
    reasons = str(row.get("collapse_reasons") or "")
    if switch < USED_SWITCH or "always active" in reasons or "never active" in reasons:
        return {"min_frequency": None, "max_frequency": None, "switch_rate": switch, "case": case, "used": False}
    return None


def seed_bars(
    scores: Sequence[Mapping[str, Any]],
    selection: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    conditions: Sequence[str],
) -> list[dict[str, Any]]:
    """Stage 2: per RIM model and seed, its selection on every condition and whether it meets the bar.

    :param scores: ``seeds.csv`` rows (``model``, ``seed``, ``condition``, ``success``).
    :param selection: ``selection.csv`` rows (``unit_frequency``, ``switch_rate``, ``selection_case``, and on
        ``validation`` ``mean_return`` and ``mean_success``).
    :param models: the models, in order (those without selection rows are left out).
    :param conditions: the test conditions, ``iid`` among them.
    :returns: dicts with ``model``, ``seed``, ``iid_success``, ``conditions`` (``{condition: usage or None}``,
        validation included), ``bar`` (``None`` when a condition is not recorded), ``validation_return``,
        ``validation_success`` and ``validation_bar`` (``None`` when not recorded).
    """
    success = {(r["model"], int(r["seed"])): _number(r["success"]) for r in scores if r["condition"] == IID}
    by_key = {(r["model"], int(r["seed"]), r["condition"]): r for r in selection}
    out = []
    for model in models:
        for seed in sorted({int(r["seed"]) for r in selection if r["model"] == model}):
            usage = {c: _condition_usage(by_key.get((model, seed, c))) for c in [*conditions, VALIDATION]}
            iid = success.get((model, seed))
            tests = [usage[c] for c in conditions]
            bar = None if iid is None or None in tests else bool(learns(iid) and all(u["used"] for u in tests))
            row = by_key.get((model, seed, VALIDATION), {})
            val_success, val_return = _number(row.get("mean_success")), _number(row.get("mean_return"))
            on_val = usage[VALIDATION]
            val_bar = None if on_val is None or val_success is None else bool(learns(val_success) and on_val["used"])
            out.append(
                {"model": model, "seed": seed, "iid_success": iid, "conditions": usage, "bar": bar,
                 "validation_return": val_return, "validation_success": val_success, "validation_bar": val_bar}
            )  # fmt: skip
    return out


def bar_counts(bars: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per model: ``seeds``, ``bar`` (seeds meeting it), ``bar_recorded`` (seeds whose every condition is
    recorded), ``validation_bar`` and ``validation_recorded``."""
    out: dict[str, dict[str, int]] = {}
    for row in bars:
        count = out.setdefault(row["model"], dict.fromkeys(
            ("seeds", "bar", "bar_recorded", "validation_bar", "validation_recorded"), 0))  # fmt: skip
        count["seeds"] += 1
        count["bar"] += row["bar"] is True
        count["bar_recorded"] += row["bar"] is not None
        count["validation_bar"] += row["validation_bar"] is True
        count["validation_recorded"] += row["validation_bar"] is not None
    return out


def choose_remedy(
    bars: Sequence[Mapping[str, Any]], candidates: Mapping[str, str], seeds: Sequence[int]
) -> dict[str, Any]:
    """Stage 3: the family the rule of this module carries on, from the stage-2 seeds' bars on validation levels.

    :param bars: :func:`seed_bars` rows.
    :param candidates: ``{family: its model in the table}``, in family order.
    :param seeds: the table's stage-2 seeds; a candidate needs validation statistics for each.
    :returns: ``{"family", "model", "seeds", "candidates": {family: {"model", "validation_bar",
        "mean_validation_return"}}, "missing": {model: seeds without validation statistics}}``; ``family`` and
        ``model`` are ``None`` while a candidate misses seeds or there is none.
    """
    table: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[int]] = {}
    for family, model in candidates.items():
        mine = {r["seed"]: r for r in bars if r["model"] == model and r["seed"] in seeds}
        lacking = [s for s in seeds if mine.get(s, {}).get("validation_bar") is None]
        if lacking:
            missing[model] = lacking
            continue
        table[family] = {
            "model": model,
            "validation_bar": sum(mine[s]["validation_bar"] for s in seeds),
            "mean_validation_return": float(np.mean([mine[s]["validation_return"] for s in seeds])),
        }
    chosen = None
    if table and not missing:  # max keeps the first of equal keys: the first family in order
        chosen = max(table, key=lambda f: (table[f]["validation_bar"], table[f]["mean_validation_return"]))
    return {
        "family": chosen,
        "model": None if chosen is None else table[chosen]["model"],
        "seeds": list(seeds),
        "candidates": table,
        "missing": missing,
    }
