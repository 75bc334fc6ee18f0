"""The result tables of the README and the docs, generated from the committed summaries so that they cannot drift.

A table sits in ``README.md`` or a page of ``docs/`` between ``<!-- results:<table> -->`` and
``<!-- /results:<table> -->``. ``python scripts/reproduce.py readme`` rewrites every such block of every
such file from ``scripts/reproduce/<table>/summary.json``; a test checks that the files hold exactly
what the committed summaries say. A block shows, per condition, each model's IQM final return with its 95%
CI, each RIM model's P(RIM > LSTM) with its CI and verdict, how many seeds learned the training
levels, and whether the RIM models' selection collapsed. A copying table's block shows its test
metrics per model and blank length and the CE verdicts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agents.experiment.atomic import atomic_write_text

from .copying_report import render_readme_block
from .report import md_table, rate_cell
from .summary import BETTER, WORSE
from .tables import REPO, RESULTS_DIR, ReproduceError

BLOCK = re.compile(r"<!-- results:(?P<table>[\w-]+) -->\n(?P<body>.*?)<!-- /results:(?P=table) -->", re.S)
SUMMARY = "summary"  # the README's summary: every split table's primary endpoint, from the tables' summaries
VERDICTS = {BETTER: "**RIM better**", WORSE: "**LSTM better**"}  # otherwise: no difference at 95%


def _interval(value: dict[str, Any]) -> str:
    """``0.81 [0.75, 0.90]``."""
    return f"{value['point']:.2f} [{value['ci'][0]:.2f}, {value['ci'][1]:.2f}]"


def _row(summary: dict[str, Any], condition: str, pairs: list[tuple[str, str]]) -> list[str]:
    """One condition: the models' IQM returns, then each RIM model's P(> LSTM) and verdict."""
    name = "all OOD" if condition == "all_ood" else condition
    if condition in summary["cannot_separate"]:
        name += " (all ~0)"
    cells = [name]
    for model in summary["models"]:
        cell = summary["models"][model]["conditions"].get(condition, {}).get("return")
        cells.append(_interval(cell["iqm"]) if cell else "-")
    index = {(r["model"], r["baseline"]): r for r in summary["improvements"]
             if r["metric"] == "return" and r["condition"] == condition}  # fmt: skip
    for pair in pairs:
        row = index.get(pair)
        cells.append("-" if row is None else _p_cell(row))
    return cells


def _p_cell(row: dict[str, Any]) -> str:
    """``0.38 [0.15, 0.65] p=0.46 no difference``: P(model > baseline), its CI, the Holm-adjusted p and the verdict."""
    return f"{_interval(row)} p={row['p_holm']:.2g} {VERDICTS.get(row['verdict'], 'no difference')}"


def render_summary(results: Path = RESULTS_DIR) -> str:
    """The README's summary block: every split table's primary endpoint, one row per RIM model against the LSTM
    (and per RIM model against each contrast of the table's protocol, named in the row).

    Tables are those under ``results`` whose ``summary.json`` has a declared primary endpoint, in name order.
    """
    rows = []
    for path in sorted(results.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):  # a folder of rims-compare rows, not a reproduce table
            continue
        for row in summary.get("primary", []):
            model = summary["models"][row["model"]]
            iqm = model["conditions"].get("all_ood", {}).get("return", {}).get("iqm")
            base = summary["models"][row["baseline"]]["conditions"].get("all_ood", {}).get("return", {}).get("iqm")
            rows.append(
                [
                    f"[{summary['table']}](docs/results.md)",
                    f"`{row['model']}`" + ("" if row["baseline"] == "lstm" else f" vs `{row['baseline']}`"),
                    f"{row['n_seeds']} vs {row['baseline_seeds']}",
                    "-" if iqm is None or base is None else f"{iqm['point']:.2f} vs {base['point']:.2f}",
                    _p_cell(row),
                ]
            )
    header = ["table", "RIM model", "seeds (RIM vs LSTM)", "IQM return, pooled OOD (RIM vs LSTM)",
              "P(RIM > LSTM) [95% CI], Holm p, verdict"]  # fmt: skip
    return (
        "Primary endpoint of each table, declared before its runs: the final return pooled over its OOD conditions "
        "(`scripts/reproduce/<table>/protocol.yaml`); P(RIM > LSTM) with a 95% CI from resampling whole seeds, "
        "a permutation test over whole seeds, Holm-adjusted across the table's RIM models.\n\n"
        + md_table(header, rows)
        + "\n"
    )


def render_verdicts_block(summary: dict[str, Any]) -> str:
    """The block of the ``verdicts`` table: per split table the rule's false-verdict rate and the seeds for 80%."""
    rows = []
    exact_rule = "suite_rule_exact_splits"
    for t in summary["tables"]:
        rates = t["false_verdicts"]

        power = "; ".join(
            f"`{m}` {'> 60' if p['seeds_for_80'] is None else p['seeds_for_80']} (P {p['observed_p']:.2f})"
            for m, p in t["power"].items()
        )
        rates_shown = [rate_cell(rates[n].get(exact_rule), 3) for n in ("5", "10")]
        rates_shown += [
            rate_cell(rates[n].get(rule)) for rule in ("suite_rule", "stratified_bootstrap_rule") for n in ("5", "10")
        ]
        rows.append([t["table"], str(t["pool"]["seeds"]), *rates_shown, power or "-"])
    header = ["table", "seeds in the null pool", "false verdicts, 5 seeds (exact over splits)", "10 seeds",
              "sampled, 5 seeds", "10 seeds", "stratified bootstrap, 5 seeds", "10 seeds",
              "seeds per model for 80% power (observed pooled P)"]  # fmt: skip
    trials = ", ".join(f"{n} seeds: {t} trials" for n, t in summary["trials"].items())
    sets = ", ".join(f"{n} seeds: {t} drawn sets" for n, t in summary.get("split_trials", {}).items())
    return (
        f"Rate of 'better' or 'worse' verdicts of the suite's rule when both models' seeds are drawn from one pool "
        f"(the table's own seeds, whole rows), on the primary endpoint, ± its Monte Carlo standard error: *exact "
        f"over splits* counts, for each drawn set of seeds, every split of it into the two models ({sets}); "
        f"*sampled* tests one split per draw ({trials}). Beside them the stratified-bootstrap rule the tables used "
        "before, on the same null, and the seed count at which a difference of the observed size is detected 80% "
        "of the time (`scripts/reproduce/verdicts/report.md`).\n\n" + md_table(header, rows) + "\n"
    )


def _collapse_line(summary: dict[str, Any]) -> str:
    """``rim: collapsed in 5/5 seeds on every condition, switch rate on iid 0.004 ± 0.003; ...``."""
    parts = []
    for model, stats in summary.get("modularity", {}).items():
        cells = list(stats["aggregate"].values())
        if not cells:
            continue
        collapsed = sorted({(c["collapsed_runs"], c["n_runs"]) for c in cells})
        counts = (
            f"{collapsed[0][0]}/{collapsed[0][1]} seeds on every condition"
            if len(collapsed) == 1
            else f"{collapsed[0][0]}-{collapsed[-1][0]} of {collapsed[-1][1]} seeds per condition"
        )
        iid = stats["aggregate"].get("iid", cells[0])
        parts.append(
            f"`{model}` collapsed in {counts}, switch rate on {iid['condition']} "
            f"{iid['switch_rate']:.3f} ± {iid['switch_rate_std']:.3f}"
        )
    return "; ".join(parts)


def render_block(summary: dict[str, Any]) -> str:
    """The markdown of one table's block (without the markers), from its ``summary.json`` data."""
    if summary.get("table") == "copying":
        return render_readme_block(summary)
    if summary.get("table") == "verdicts":
        return render_verdicts_block(summary)
    pairs = list(dict.fromkeys((r["model"], r["baseline"]) for r in summary["improvements"]))
    header = ["condition", *summary["models"], *(f"P({m} > {b})" for m, b in pairs)]
    rows = [_row(summary, condition, pairs) for condition in summary["conditions"]]
    learned = ", ".join(f"`{m}` {c['learned']}/{c['seeds']}" for m, c in summary["iid_learned"].items())
    text = [
        f"IQM of the final deterministic return over seeds [95% CI]; P(model > baseline) [95% CI from resampling "
        f"whole seeds], the permutation test's Holm-adjusted p (across conditions; `all OOD`, the primary endpoint: "
        f"across models) and the verdict. "
        f"Seeds that learned the training levels (iid success >= 0.9): {learned}.",
        "",
        md_table(header, rows),
    ]
    collapse = _collapse_line(summary)
    if collapse:
        text += ["", f"Selection of the RIM models (`rims-visualize --stats-only`, see the report): {collapse}."]
    return "\n".join(text) + "\n"


def _summary(table: str, results: Path) -> dict[str, Any]:
    path = results / table / "summary.json"
    if not path.is_file():
        raise ReproduceError(f"README.md has a block for table {table!r}, but {path} does not exist")
    return json.loads(path.read_text())


def expected_readme(text: str, results: Path = RESULTS_DIR) -> str:
    """``text`` (a README) with every results block rendered from its committed summary."""

    def fill(match: re.Match[str]) -> str:
        table = match["table"]
        body = render_summary(results) if table == SUMMARY else render_block(_summary(table, results))
        return f"<!-- results:{table} -->\n{body}<!-- /results:{table} -->"

    return BLOCK.sub(fill, text)


def update_readme(readme: Path, results: Path = RESULTS_DIR) -> list[str]:
    """Rewrite ``readme``'s results blocks; returns the tables whose block changed."""
    text = readme.read_text()
    new = expected_readme(text, results)
    changed = [
        m["table"] for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(new), strict=True) if m["body"] != n["body"]
    ]
    if changed:
        atomic_write_text(readme, new)
    return changed


def result_files(repo: Path = REPO) -> list[Path]:
    """``README.md`` and every page of ``docs/`` that holds a results block."""
    pages = sorted((repo / "docs").rglob("*.md")) if (repo / "docs").is_dir() else []
    return [repo / "README.md", *(page for page in pages if BLOCK.search(page.read_text()))]


def update_docs(repo: Path = REPO, results: Path = RESULTS_DIR) -> dict[Path, list[str]]:
    """Rewrite the results blocks of every file of :func:`result_files`; returns each file's changed tables."""
    return {path: update_readme(path, results) for path in result_files(repo)}
