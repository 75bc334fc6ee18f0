"""The split tables of issue 26 item 5, stages 2 and 3: ``modularity`` and ``modularity_multiroom``.

Their models come from earlier choices: ``modularity`` compares the candidate that ``modularity_tune`` chose for
each remedy family with ``lstm`` and ``rim`` (the doorkey table's runs, shared); ``modularity_multiroom`` compares
the remedy that ``modularity`` carried on with the multiroom table's ``lstm`` and ``rim``
(:func:`modularity_models`). Beside a split table's folder they show every seed's selection on each test condition
and on validation levels, the bar per model, and (``modularity`` only) the remedy carried on to stage 3
(:func:`modularity_extra`). The rules are those of :mod:`agents.analysis.reproduce.remedy_rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.analysis.compare import CANDIDATE_PREFIX
from envs.splits import VALIDATION

from .modularity_tune import load_coefficient_choice
from .remedy_rules import BAR_RULE, REMEDY_RULE, USED_TEXT, bar_counts, choose_remedy, seed_bars
from .report import Extra, md_table, number_cell
from .seed_store import SeedStore
from .tables import (
    FIXED_SELECTION,
    MODULARITY,
    MODULARITY_MULTIROOM,
    MODULARITY_TUNE,
    REMEDY_FAMILIES,
    REMEDY_MODELS,
    ReproduceError,
    family_of,
)
from .training_selection import training_rows, training_section
from .tune import read_choice

SUMMARY = "summary.json"


def load_remedy_choice(path: Path) -> str:
    """The remedy the ``modularity`` table carried on to stage 3, from its ``summary.json``.

    :raises ReproduceError: the file is missing or the table has not chosen yet.
    """
    model = read_choice(path, MODULARITY, "remedy chosen for stage 3").get("model")
    if model not in REMEDY_MODELS:
        raise ReproduceError(f"{path}: the chosen remedy {model!r} is no remedy candidate {list(REMEDY_MODELS)}")
    return str(model)


def modularity_models(table: str, results: Path, smoke: bool = False) -> tuple[str, ...]:
    """The models a modularity table compares by default: ``lstm``, ``rim`` and the remedies chosen before it.

    :param results: the folder of the earlier tables' folders (``scripts/reproduce``; a smoke run's own root).
    :param smoke: ``lstm``, ``rim`` and the last remedy only; the tune may have chosen for some families only.
    :raises ReproduceError: the earlier table has not chosen (for every family, outside a smoke run).
    """
    if table == MODULARITY:
        choice = load_coefficient_choice(results / MODULARITY_TUNE / SUMMARY)
        missing = [family for family in REMEDY_FAMILIES if family not in choice]
        if missing and not smoke:
            raise ReproduceError(
                f"table {MODULARITY_TUNE!r} has chosen no candidate for the families {missing} yet "
                f"({results / MODULARITY_TUNE / SUMMARY}); finish `python scripts/reproduce.py {MODULARITY_TUNE}` first"
            )
        remedies = [choice[family] for family in REMEDY_FAMILIES if family in choice]
    elif table == MODULARITY_MULTIROOM:
        remedies = [load_remedy_choice(results / MODULARITY / SUMMARY)]
    else:
        raise ReproduceError(f"{table!r} is no modularity table ({MODULARITY}, {MODULARITY_MULTIROOM})")
    return ("lstm", FIXED_SELECTION, *(remedies[-1:] if smoke else remedies))


def _usage_cell(usage: dict[str, Any] | None) -> str:
    """``0.02-0.99, 0.004, fixed``: the least and most active unit's share of steps (``?``: not recorded), the
    switch rate, the case (``?``: not recorded)."""
    if usage is None:
        return "-"
    low, high = usage["min_frequency"], usage["max_frequency"]
    shares = "?" if low is None else f"{low:.2f}-{high:.2f}"
    return f"{shares}, {usage['switch_rate']:.3f}, {usage['case'] or '?'}{' (used)' if usage['used'] else ''}"


def _flag(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def per_seed_section(bars: Sequence[dict[str, Any]], conditions: Sequence[str]) -> str:
    """Every seed's selection on each condition and on validation levels, and its bars."""
    shown = [*conditions, VALIDATION]
    header = ["model", "seed", "iid success", *shown, "bar", "validation success", "validation return",
              "bar on validation"]  # fmt: skip
    rows = [
        [row["model"], str(row["seed"]), number_cell(row["iid_success"]),
         *(_usage_cell(row["conditions"][c]) for c in shown), _flag(row["bar"]), number_cell(row["validation_success"]),
         number_cell(row["validation_return"]), _flag(row["validation_bar"])]
        for row in bars
    ]  # fmt: skip
    return (
        "Per condition: the share of steps of the least and of the most active unit, the within-episode switch rate "
        f"and the selection case, `(used)` where {USED_TEXT}; `?` and `-`: not recorded (seeds played before the unit "
        "frequencies, the cases or the validation statistics were recorded, e.g. shared `rim` seeds of the doorkey and "
        "multiroom tables; such a seed still counts as not used where its switch rate or collapse reasons say so). "
        "Validation "
        "success and return: the statistics' deterministic episodes on the validation levels.\n\n"
        + md_table(header, rows)
    )


def _of(count: int, seeds: int, recorded: int) -> str:
    """``3/5``, and how many seeds recorded the statistics when not all did."""
    return f"{count}/{seeds}" + (f" ({recorded} recorded)" if recorded < seeds else "")


def bar_section(counts: dict[str, dict[str, int]]) -> str:
    """The bar per model: seeds meeting it on the test conditions and on validation levels."""
    rows = [
        [f"`{model}`", _of(c["bar"], c["seeds"], c["bar_recorded"]),
         _of(c["validation_bar"], c["seeds"], c["validation_recorded"])]
        for model, c in counts.items()
    ]  # fmt: skip
    return (
        f"The bar (rule stated before the runs, `agents/analysis/reproduce/remedy_rules.py`): {BAR_RULE}. A RIM whose "
        "seeds miss it on every condition is in effect a smaller LSTM.\n\n"
        + md_table(["model", "seeds meeting the bar (iid and every OOD condition)", "on validation levels"], rows)
    )


def choice_section(remedy: dict[str, Any]) -> str:
    """The remedy carried on to stage 3, with each family's numbers."""
    rows = [
        [family, f"`{c['model']}`", f"{c['validation_bar']}/{len(remedy['seeds'])}",
         f"{c['mean_validation_return']:.3f}", "**chosen**" if family == remedy["family"] else ""]
        for family, c in remedy["candidates"].items()
    ]  # fmt: skip
    text = f"Rule, stated before the runs: {REMEDY_RULE}; on the table's stage-2 seeds {remedy['seeds']}."
    if remedy["missing"]:
        lacking = "; ".join(f"`{m}` seeds {s}" for m, s in remedy["missing"].items())
        text += f" No choice yet: validation statistics are missing for {lacking}."
    else:
        text += (
            f" Chosen: `{remedy['model']}` (family `{remedy['family']}`); `modularity_multiroom` and seeds 5-9 run it."
        )
    header = ["family", "candidate", "seeds meeting the bar on validation", "mean validation return", ""]
    return text + ("\n\n" + md_table(header, rows) if rows else "")


def modularity_extra(
    table: str, view: SeedStore, models: Sequence[str], conditions: Sequence[str], seeds: Sequence[int]
) -> Extra:
    """What a modularity table adds to its folder: the per-seed selection and bar, the selection during training,
    and for ``modularity`` the remedy carried on (``summary.json``: ``selection_bar``, ``training_selection``,
    ``remedy_choice`` and ``choice``).

    :param view: the table's seed record with the shared models' rows.
    :param models: the models compared; ``conditions``: the test conditions evaluated.
    :param seeds: the stage-2 seeds the choice counts.
    :raises ReproduceError: two candidates of one family among ``models``.
    """
    bars = seed_bars(view.scores, view.selection, models, conditions)
    counts = bar_counts(bars)
    summary: dict[str, Any] = {
        "selection_bar": {"rule": BAR_RULE, "conditions": list(conditions), "counts": counts, "per_seed": bars}
    }
    cores = {r["model"]: str(r.get("core", "")) for r in view.scores}
    rims = [m for m in models if cores.get(m, "").startswith(CANDIDATE_PREFIX)]
    training = training_rows(view, rims)
    summary["training_selection"] = training
    sections = [("Does the selection meet the bar?", bar_section(counts)),
                ("Every seed's selection", per_seed_section(bars, conditions)),
                ("The selection during training", training_section(training, rims))]  # fmt: skip
    if table == MODULARITY:
        candidates: dict[str, str] = {}
        for model in (m for m in models if m in REMEDY_MODELS):
            family = family_of(model)
            if family in candidates:
                raise ReproduceError(f"table {table!r} holds two candidates of family {family!r}: "
                                     f"{candidates[family]} and {model}; it compares one per family")  # fmt: skip
            candidates[family] = model
        order = {family: i for i, family in enumerate(REMEDY_FAMILIES)}
        remedy = choose_remedy(bars, dict(sorted(candidates.items(), key=lambda item: order[item[0]])), seeds)
        summary["remedy_choice"] = {**remedy, "rule": REMEDY_RULE}
        summary["choice"] = {"family": remedy["family"], "model": remedy["model"]} if remedy["model"] else {}
        sections.append(("The remedy carried on (stage 3)", choice_section(remedy)))
    return Extra(summary, sections)
