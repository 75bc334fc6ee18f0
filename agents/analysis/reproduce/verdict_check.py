"""The ``verdicts`` table: the measured error rate and power of the verdict rule, on each split table's own seeds.

For every split table with a seed record and a declared primary endpoint, on the primary endpoint's
conditions and metric (:mod:`agents.analysis.compare.error_rates`):

- the false-verdict rate of the suite's rule (permutation test over whole seeds, level 0.05) at 5 and 10 seeds
  per model, under a null drawn from all of the table's seeds (whole rows: their correlation across conditions
  and their ties kept), with its Monte Carlo standard error; beside it the rate of the rule it replaced (the
  stratified-bootstrap CI of P(X > Y) excludes 1/2), on the same null;
- per single condition, the suite's rule at 5 seeds (one column: the exact rank test);
- per RIM model of the table, the power to see a difference of the observed size (each model's seeds drawn from
  its own recorded seeds) and the smallest seed count with power >= 0.8.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agents.analysis.compare import CANDIDATE_PREFIX
from agents.analysis.compare.error_rates import (
    Rate,
    exact_split_false_verdict_rate,
    false_verdict_rate,
    permutation_rule,
    seeds_for_power,
    stratified_bootstrap_rule,
)
from agents.analysis.compare.seed_tests import pooled_improvement
from agents.experiment.atomic import atomic_write_text

from .meta import meta_lines, write_meta
from .protocol import Protocol, load_protocol
from .report import md_table, rate_cell
from .seed_store import SeedStore, with_shared
from .tables import RESULTS_DIR

log = logging.getLogger(__name__)

VERDICTS = "verdicts"
CHECKED_TABLES = ("empty", "doorkey", "multiroom", "knobs")
SPLITS = {"knobs": "doorkey"}
SEED_COUNTS = (5, 10)
POWER_COUNTS = (5, 10, 15, 20, 30, 40, 60)


def seed_matrix(store: SeedStore, model: str, conditions: Sequence[str], metric: str) -> np.ndarray:
    """``(seeds, conditions)`` final scores of one model from a seed record (seeds lacking a condition left out)."""
    rows: dict[int, dict[str, float]] = {}
    for r in store.scores:
        if r["model"] == model and r["condition"] in conditions:
            rows.setdefault(int(r["seed"]), {})[r["condition"]] = float(r[metric])
    return np.array([[row[c] for c in conditions] for _, row in sorted(rows.items()) if len(row) == len(conditions)])


def _rate(rate: Rate) -> dict[str, Any]:
    return asdict(rate)


def check_table(
    table: str,
    protocol: Protocol,
    store: SeedStore,
    trials: dict[int, int],
    old_trials: int,
    power_trials: int,
    split_trials: dict[int, int] | None = None,
) -> dict[str, Any]:
    """The error rates and power of the rule on one table's seeds (see the module docstring).

    :param trials: simulated comparisons per seed count for the suite's rule.
    :param split_trials: drawn sets of seeds per seed count whose splits are all counted (defaults to ``trials``).
    :param old_trials: simulated comparisons per seed count for the stratified-bootstrap rule.
    :param power_trials: simulated comparisons per seed count for the power.
    """
    split_trials = split_trials or trials
    conditions, metric = list(protocol.pooled), protocol.metric
    matrices = {m: seed_matrix(store, m, conditions, metric) for m in store.models()}
    matrices = {m: x for m, x in matrices.items() if len(x)}
    pool = np.concatenate(list(matrices.values()))
    log.info("verdicts: table %s, pool of %d seeds x %d conditions", table, *pool.shape)
    rates = {
        n: {
            "suite_rule_exact_splits": _rate(exact_split_false_verdict_rate(pool, n, split_trials[n], seed=n)),
            "suite_rule": _rate(false_verdict_rate(pool, n, trials[n], permutation_rule, seed=n)),
            "stratified_bootstrap_rule": _rate(false_verdict_rate(pool, n, old_trials, stratified_bootstrap_rule, n)),
        }
        for n in SEED_COUNTS
    }
    per_condition = {
        c: _rate(false_verdict_rate(pool[:, [j]], SEED_COUNTS[0], trials[SEED_COUNTS[0]], permutation_rule, seed=j))
        for j, c in enumerate(conditions)
    }
    power = {}
    baseline = matrices.get(protocol.baseline)
    cores = {r["model"]: str(r["core"]) for r in store.scores}
    for model, x in matrices.items():
        if baseline is None or model == protocol.baseline or not cores[model].startswith(CANDIDATE_PREFIX):
            continue
        needed, curve = seeds_for_power(x, baseline, 0.8, POWER_COUNTS, power_trials)
        power[model] = {
            "observed_p": pooled_improvement(x, baseline),
            "seeds": [len(x), len(baseline)],
            "seeds_for_80": needed,
            "curve": [_rate(r) for r in curve],
        }
    return {
        "table": table,
        "conditions": conditions,
        "metric": metric,
        "pool": {"seeds": int(pool.shape[0]), "models": {m: len(x) for m, x in matrices.items()}},
        "false_verdicts": {str(n): r for n, r in rates.items()},
        "false_verdicts_per_condition_5_seeds": per_condition,
        "power": power,
    }


def render_verdicts_report(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """``report.md`` of the verdicts table."""
    rows, power_rows, single = [], [], []
    for t in summary["tables"]:
        for n, r in t["false_verdicts"].items():
            exact = r.get("suite_rule_exact_splits")
            rows.append(
                [
                    t["table"],
                    str(t["pool"]["seeds"]),
                    n,
                    rate_cell(exact, 3) if exact else "not computed",
                    rate_cell(r["suite_rule"]),
                    rate_cell(r["stratified_bootstrap_rule"]),
                ]
            )
        single.append(
            [t["table"], *(f"{c}: {rate_cell(r)}" for c, r in t["false_verdicts_per_condition_5_seeds"].items())]
        )
        for model, p in t["power"].items():
            reached = ", ".join(f"{r['seeds']}: {r['rate']:.2f}" for r in p["curve"])
            needed = "more than 60" if p["seeds_for_80"] is None else str(p["seeds_for_80"])
            power_rows.append([t["table"], f"`{model}` vs `lstm`", f"{p['observed_p']:.2f}", needed, reached])
    return (
        "\n\n".join(
            [
                "# Table `verdicts`: the error rate and power of the verdict rule, on our own seeds",
                meta_lines(meta),
                "The rule behind every verdict of the split tables: a two-sided permutation test of P(model > "
                "baseline) over whole seeds at level 0.05 (`agents/analysis/compare/seed_tests.py`). Null: both "
                "models' seeds drawn, whole and with replacement, from every recorded seed of the table (all models), "
                "on the table's primary endpoint (pooled OOD conditions, final return), so the simulated seeds keep "
                "the correlation across conditions, the ties and the bimodality of ours. A false verdict is any "
                "'better' or 'worse'; ± is the Monte Carlo standard error. The rule the tables used before (the 95% "
                "stratified-bootstrap CI of P excludes 0.5, each condition's seeds resampled independently) is shown "
                "on the same null.",
                "Two estimates of the suite's rule: *sampled* tests the one split of each drawn set of seeds into "
                "candidate and baseline; *exact over splits* counts, for each drawn set, the fraction of all its "
                "C(2n, n) splits that get a verdict (every split is equally likely under the null), which is the "
                "rule's error rate given those seeds, and averages it over the drawn sets. Both estimate the same "
                "rate; the second has a far smaller Monte Carlo error, and each set's fraction is at most 0.05 when "
                "the test is valid. Drawn sets: "
                + ", ".join(f"{n} seeds per model: {t}" for n, t in summary.get("split_trials", {}).items())
                + ".",
                "## False-verdict rate under the null (pooled primary endpoint)",
                md_table(
                    [
                        "table",
                        "seeds in the pool",
                        "seeds per model",
                        "suite's rule, exact over splits",
                        "suite's rule, sampled",
                        "stratified bootstrap",
                    ],
                    rows,
                ),
                "## False-verdict rate of the suite's rule on single conditions, 5 seeds per model",
                "\n".join(f"- `{r[0]}`: " + "; ".join(r[1:]) for r in single),
                "## Power: seeds per model to detect a difference of the observed size 80% of the time",
                "Each model's seeds drawn from its own recorded seeds; the rate of verdicts in the observed direction "
                "per seed count (unadjusted level 0.05).",
                md_table(
                    ["table", "comparison", "observed pooled P", "seeds for 80%", "power per seed count"], power_rows
                ),
            ]
        )
        + "\n"
    )


def write_verdicts(
    out_dir: Path,
    meta: dict[str, Any],
    tables: Sequence[str] = CHECKED_TABLES,
    results: Path = RESULTS_DIR,
    trials: dict[int, int] | None = None,
    old_trials: int = 300,
    power_trials: int = 150,
    split_trials: dict[int, int] | None = None,
) -> list[Path]:
    """Check every table of ``tables`` that has a seed record; write ``summary.json``, ``report.md``, ``meta.json``."""
    trials = trials or {5: 2000, 10: 3000}
    split_trials = split_trials or {5: 2000, 10: 300}
    checked = []
    for table in tables:
        split = SPLITS.get(table, table)
        store = with_shared(SeedStore.load(results / table, split), table, results)
        if not store.scores:
            log.warning("verdicts: table %s has no seed record; skipped", table)
            continue
        checked.append(
            check_table(
                table, load_protocol(table, split, results), store, trials, old_trials, power_trials, split_trials
            )
        )
    summary = {
        "table": VERDICTS,
        "trials": {str(n): t for n, t in trials.items()},
        "split_trials": {str(n): t for n, t in split_trials.items()},
        "tables": checked,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", render_verdicts_report(summary, meta))
    return [out_dir / "summary.json", out_dir / "report.md", write_meta(meta, out_dir)]
