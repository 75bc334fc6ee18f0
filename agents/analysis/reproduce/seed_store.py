"""The committed per-seed record of a table: every seed's final scores, learning curve and selection statistics.

Run folders are not committed, and a table grows over time (more seeds, in later sessions, on other
machines), so its statistics are computed from this record rather than from whatever run folders exist.
Compact CSV files sit beside a table's ``summary.json``:

- ``seeds.csv``: one row per model x seed x condition: final deterministic ``return`` and ``success``
  (100 episodes), the model's ``core`` and ``learning_rate``, and ``source`` (the run folder it was read from);
- ``curves.csv``: one row per model x seed x condition x evaluation: the periodic ``mean_return``;
- ``selection.csv``: one row per RIM model x seed x condition: the activation statistics of
  :mod:`agents.analysis.activations` (switch rate, mean active units, unit frequencies, collapse reasons, and
  from issue 26 on the selection case, distinct sets, usage entropy, collapse metric, always-on and never-on
  units, and from issue 26 item 5 on the share of the played episodes that succeeded; rows harvested before have
  these cells empty, and :func:`derived_case` recovers the case where the older columns determine it);
- ``specialisation.csv`` (from issue 26 on; written once a harvest records any row): one row per RIM model x seed
  x condition x variable (each unit, and ``set``) x environment factor: the mutual information and its
  permutation baseline (:func:`agents.analysis.specialisation.specialisation`);
- ``training.csv`` (from issue 26 on; written once a harvest records any row): one row per RIM model x seed x
  statistic x logged update: the selection of the training rollouts over training (``switch_rate``,
  ``usage_entropy``, ``collapse``; :data:`~agents.analysis.compare.runs.SELECTION_CURVES`, thinned to at most
  :data:`~agents.analysis.compare.runs.MAX_CURVE_POINTS` updates per run).

Finished run folders are added with :meth:`SeedStore.add_runs` (their rows replace any earlier rows of the
same model and seed); :meth:`SeedStore.runs` gives the record back as :class:`~agents.analysis.compare.Run`
objects for :func:`~agents.analysis.compare.compare_runs`, whatever folders still exist.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.analysis.activations import collapse_reasons
from agents.analysis.compare import Run
from agents.analysis.modularity import ModelStats, case_aggregate
from agents.analysis.specialisation import aggregate_specialisation
from agents.experiment.atomic import write_csv
from agents.experiment.selection_stats import selection_case

from .meta import repo_relative
from .tables import RESULTS_DIR, SHARED_SWEEPS

SCORES, CURVES, SELECTION, SPECIALISATION = "seeds.csv", "curves.csv", "selection.csv", "specialisation.csv"
TRAINING = "training.csv"
SCORE_FIELDS = ("model", "seed", "condition", "return", "success", "core", "learning_rate", "source")
CURVE_FIELDS = ("model", "seed", "condition", "frames", "mean_return")
SELECTION_FIELDS = (
    "model", "seed", "condition", "switch_rate", "mean_active", "unit_frequency", "collapse_reasons", "mean_return",
    "selection_case", "distinct_sets", "usage_entropy", "collapse", "always_on", "never_on", "mean_success",
)  # fmt: skip
SPECIALISATION_FIELDS = (
    "model", "seed", "condition", "variable", "factor", "mi_bits", "baseline_mean", "baseline_p95", "excess_bits",
    "p_value", "factor_entropy_bits",
)  # fmt: skip
TRAINING_FIELDS = ("model", "seed", "statistic", "frames", "value")
OPTIONAL = (SPECIALISATION, TRAINING)  # written only once they hold a row
LIST_SEP = " "  # unit frequencies in one cell
REASON_SEP = "; "  # collapse reasons in one cell


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _key(row: dict[str, Any]) -> tuple[str, int]:
    return str(row["model"]), int(row["seed"])


@dataclass
class SeedStore:
    """Per-seed rows of one table (see the module docstring); rows are plain dicts of strings and numbers.

    :param split: the table's split (``env.name`` of its runs).
    """

    split: str
    scores: list[dict[str, Any]] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)
    selection: list[dict[str, Any]] = field(default_factory=list)
    specialisation: list[dict[str, Any]] = field(default_factory=list)
    training: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path, split: str) -> SeedStore:
        """The record committed in ``folder`` (empty when it has none)."""
        files = (SCORES, CURVES, SELECTION, SPECIALISATION, TRAINING)
        return cls(split, *(_read(folder / name) for name in files))

    def save(self, folder: Path) -> list[Path]:
        """Write the CSV files atomically, rows sorted by model, seed, condition (and frames); ``specialisation.csv``
        and ``training.csv`` only when they have rows."""
        folder.mkdir(parents=True, exist_ok=True)
        order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in self.scores))}

        def sort_key(row: dict[str, Any]) -> tuple[int, int]:
            return order.get(str(row["model"]), len(order)), int(row["seed"])

        written = []
        for name, rows, fields in (
            (SCORES, self.scores, SCORE_FIELDS),
            (CURVES, self.curves, CURVE_FIELDS),
            (SELECTION, self.selection, SELECTION_FIELDS),
            (SPECIALISATION, self.specialisation, SPECIALISATION_FIELDS),
            (TRAINING, self.training, TRAINING_FIELDS),
        ):
            if name in OPTIONAL and not rows:
                continue
            write_csv(folder / name, sorted(rows, key=sort_key), fields)
            written.append(folder / name)
        return written

    def seeds(self, model: str) -> list[int]:
        """The seeds recorded for ``model``, sorted."""
        return sorted({int(r["seed"]) for r in self.scores if r["model"] == model})

    def models(self) -> list[str]:
        """The models recorded, in first-seen order."""
        return list(dict.fromkeys(str(r["model"]) for r in self.scores))

    def holds(self, model: str, run: Run) -> bool:
        """Whether the record already holds ``run`` (as ``model``), read from its folder, with the same scores."""
        rows = [r for r in self.scores if _key(r) == (model, run.seed)]
        if not rows or any(str(r["source"]) != repo_relative(run.path) for r in rows):
            return False
        held = {r["condition"]: (float(r["return"]), float(r["success"])) for r in rows}
        return held == {c: (s["return"], s["success"]) for c, s in run.scores.items()}

    def add_runs(self, model: str, runs: Iterable[Run]) -> None:
        """Record finished runs of ``model``; each replaces the rows of its seed."""
        for run in runs:
            key = (model, run.seed)
            self.scores = [r for r in self.scores if _key(r) != key]
            self.curves = [r for r in self.curves if _key(r) != key]
            rate = run.config.get("agent", {}).get("learning_rate")
            for condition, score in run.scores.items():
                self.scores.append(
                    {
                        "model": model,
                        "seed": run.seed,
                        "condition": condition,
                        "return": score["return"],
                        "success": score["success"],
                        "core": run.core,
                        "learning_rate": rate,
                        "source": repo_relative(run.path),
                    }
                )
            for condition, curve in run.curves.items():
                self.curves += [
                    {"model": model, "seed": run.seed, "condition": condition, "frames": f, "mean_return": v}
                    for f, v in sorted(curve.items())
                ]
            self.add_training(model, run)

    def add_training(self, model: str, run: Run) -> bool:
        """Record the training-time selection of ``run`` (as ``model``), replacing its seed's earlier rows.

        :returns: whether the run logged any (non-RIM cores and runs from before these statistics did not).
        """
        key = (model, run.seed)
        self.training = [r for r in self.training if _key(r) != key]
        for statistic, curve in run.selection.items():
            self.training += [
                {"model": model, "seed": run.seed, "statistic": statistic, "frames": f, "value": v}
                for f, v in sorted(curve.items())
            ]
        return bool(run.selection)

    def holds_training(self, model: str, seed: int) -> bool:
        """Whether the record has training-time selection rows of ``model``'s ``seed``."""
        return any(_key(r) == (model, seed) for r in self.training)

    def add_selection(self, model: str, seeds: Sequence[int], per_run: Sequence[Sequence[dict[str, Any]]]) -> None:
        """Record the activation statistics of runs of ``model`` (per run, one dict per condition)."""
        for seed, stats in zip(seeds, per_run, strict=True):
            self.selection = [r for r in self.selection if _key(r) != (model, seed)]
            self.specialisation = [r for r in self.specialisation if _key(r) != (model, seed)]
            for s in stats:
                self.specialisation += [
                    {"model": model, "seed": seed, "condition": s["condition"], **row}
                    for row in s.get("specialisation", [])
                ]
                self.selection.append(
                    {"model": model, "seed": seed, "condition": s["condition"], "switch_rate": s["switch_rate"],
                     "mean_active": s["mean_active"],
                     "unit_frequency": LIST_SEP.join(f"{f:.6g}" for f in s["unit_frequency"]),
                     "collapse_reasons": REASON_SEP.join(collapse_reasons(s)), "mean_return": s["mean_return"],
                     "selection_case": s.get("selection_case", ""), "distinct_sets": s.get("distinct_sets", ""),
                     "usage_entropy": s.get("usage_entropy", ""), "collapse": s.get("collapse", ""),
                     "always_on": LIST_SEP.join(s.get("always_on", [])),
                     "never_on": LIST_SEP.join(s.get("never_on", [])), "mean_success": s.get("mean_success", "")}
                )  # fmt: skip

    def runs(self, models: Sequence[str] | None = None) -> dict[str, list[Run]]:
        """``{model: runs sorted by seed}`` rebuilt from the record (``path``: the run folder it came from)."""
        out: dict[str, list[Run]] = {}
        for model in models if models is not None else self.models():
            rows = [r for r in self.scores if r["model"] == model]
            if not rows:
                continue
            out[model] = []
            for seed in sorted({int(r["seed"]) for r in rows}):
                mine = [r for r in rows if int(r["seed"]) == seed]
                first = mine[0]
                rate = first.get("learning_rate")
                config = {
                    "seed": seed,
                    "model": {"core": first["core"]},
                    "env": {"name": self.split},
                    "agent": {"learning_rate": None if rate in (None, "") else float(rate)},
                }
                scores = {r["condition"]: {"return": float(r["return"]), "success": float(r["success"])} for r in mine}
                curves: dict[str, dict[int, float]] = {}
                for r in self.curves:
                    if _key(r) == (model, seed):
                        curves.setdefault(r["condition"], {})[int(r["frames"])] = float(r["mean_return"])
                selection: dict[str, dict[int, float]] = {}
                for r in self.training:
                    if _key(r) == (model, seed):
                        selection.setdefault(r["statistic"], {})[int(r["frames"])] = float(r["value"])
                out[model].append(Run(Path(str(first["source"])), config, scores, curves, selection))
        return out

    def _specialisation(self, model: str, condition: str, seeds: Sequence[int]) -> list[list[dict[str, Any]]]:
        """Per seed, the ``specialisation.csv`` rows of ``model`` on ``condition`` (numbers as floats)."""
        mine = [r for r in self.specialisation if r["model"] == model and r["condition"] == condition]
        return [[_float_row(r) for r in mine if int(r["seed"]) == seed] for seed in seeds]

    def selection_stats(self, models: Sequence[str]) -> dict[str, ModelStats]:
        """The selection statistics of ``models`` averaged over their recorded seeds, per condition.

        The aggregate has the fields of :func:`agents.analysis.modularity.aggregate_stats`; unit frequencies
        and mean active units average only the seeds that recorded them (``n_frequency`` says how many).
        """
        out = {}
        for model in models:
            rows = [r for r in self.selection if r["model"] == model]
            if not rows:
                continue
            seeds = sorted({int(r["seed"]) for r in rows})
            aggregate = [_aggregate(c, [r for r in rows if r["condition"] == c], seeds)
                         for c in dict.fromkeys(r["condition"] for r in rows)]  # fmt: skip
            for agg in aggregate:
                agg["specialisation"] = aggregate_specialisation(self._specialisation(model, agg["condition"], seeds))
            out[model] = ModelStats(model, [], seeds, [], aggregate)
        return out


def _float_row(row: dict[str, Any]) -> dict[str, Any]:
    """A ``specialisation.csv`` row with its numbers as floats."""
    return {key: (value if key in ("model", "seed", "condition", "variable", "factor") else float(value))
            for key, value in row.items()}  # fmt: skip


def with_shared(store: SeedStore, table: str, results: Path = RESULTS_DIR) -> SeedStore:
    """``store`` (the record of ``table``) plus the rows of the models it shares with other tables
    (:data:`~agents.analysis.reproduce.tables.SHARED_SWEEPS`), read from their own tables' records."""
    view = SeedStore(
        store.split,
        list(store.scores),
        list(store.curves),
        list(store.selection),
        list(store.specialisation),
        list(store.training),
    )
    for model, other_table in SHARED_SWEEPS.get(table, {}).items():
        other = SeedStore.load(results / other_table, store.split)
        view.scores += [r for r in other.scores if r["model"] == model]
        view.curves += [r for r in other.curves if r["model"] == model]
        view.selection += [r for r in other.selection if r["model"] == model]
        view.specialisation += [r for r in other.specialisation if r["model"] == model]
        view.training += [r for r in other.training if r["model"] == model]
    return view


def _aggregate(condition: str, rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One condition's aggregate over seeds (see :meth:`SeedStore.selection_stats`)."""
    rows = sorted(rows, key=lambda r: seeds.index(int(r["seed"])))
    switch = np.array([float(r["switch_rate"]) for r in rows])
    freqs = [[float(f) for f in str(r["unit_frequency"]).split()] for r in rows if str(r["unit_frequency"]).strip()]
    active = [float(r["mean_active"]) for r in rows if str(r["mean_active"]).strip() not in ("", "None", "nan")]
    reasons = [[x for x in str(r["collapse_reasons"]).split(REASON_SEP) if x] for r in rows]
    sorted_freq = (-np.sort(-np.array(freqs), axis=1)).mean(axis=0).tolist() if freqs else []
    return {
        "condition": condition,
        "n_runs": len(rows),
        "n_frequency": len(freqs),
        "units": [f"u{i}" for i in range(len(freqs[0]))] if freqs else [],
        "unit_frequency": np.array(freqs).mean(axis=0).tolist() if freqs else [],
        "sorted_frequency": sorted_freq,
        "mean_active": float(np.mean(active)) if active else None,
        "switch_rate": float(switch.mean()),
        "switch_rate_std": float(switch.std()),
        "switch_rates": switch.tolist(),
        "mean_returns": [float(r["mean_return"]) for r in rows],
        "collapsed_runs": sum(bool(r) for r in reasons),
        "collapse_reasons": reasons,
        **case_aggregate([derived_case(r) for r in rows]),
        "seeds": [int(r["seed"]) for r in rows],
    }


def _number(cell: Any) -> float | None:
    """A float from a CSV cell; ``None`` for an empty or unparsable one."""
    try:
        return float(cell)
    except (TypeError, ValueError):
        return None


def derived_case(row: dict[str, Any]) -> str | None:
    """The selection case of a ``selection.csv`` row (:func:`agents.experiment.selection_stats.selection_case`).

    The ``selection_case`` cell when the row has one. Rows harvested before it existed hold the switch rate,
    the collapse reasons and sometimes the unit frequencies; with a switch rate of exactly 0 each episode holds
    one set, and the share of steps in the most common set follows from the frequencies when ``k`` is 1 or
    ``num_units - 1`` (the frequency of the busiest unit, or 1 minus that of the idlest), or from the reasons
    when they list every unit as always or never active with one of those ``k``. Otherwise (a switch rate
    above 0 leaves the within-episode share open): ``None``.
    """
    case = str(row.get("selection_case") or "").strip()
    if case:
        return case
    if _number(row.get("switch_rate")) != 0.0:
        return None
    freqs = [float(f) for f in str(row.get("unit_frequency") or "").split()]
    if freqs:
        units, k = len(freqs), round(sum(freqs))
        if k == 1:
            share = max(freqs)
        elif k == units - 1:
            share = 1.0 - min(freqs)
        else:
            return "fixed" if all(f in (0.0, 1.0) for f in freqs) else None
        return selection_case(share, 1.0)
    reasons = str(row.get("collapse_reasons") or "")
    listed = [_units(part) for part in reasons.split(REASON_SEP)]
    always = next((units for kind, units in listed if kind == "always active"), [])
    never = next((units for kind, units in listed if kind == "never active"), [])
    if always and never and min(len(always), len(never)) == 1:
        return "fixed"  # every unit listed, and the one odd unit is off (or on) in > 99% of the steps
    return None


def _units(part: str) -> tuple[str, list[str]]:
    """``"always active: u0, u1"`` -> ``("always active", ["u0", "u1"])``."""
    kind, _, units = part.partition(": ")
    return kind.strip(), [u for u in units.split(", ") if u]
