"""The committed folder of a split table: ``report.md``, ``summary.{json,csv}``, the figures and ``meta.json``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.analysis.compare import ALL_OOD, METRIC_TITLES, Comparison, plot_learning_curves, plot_ood_bars
from agents.analysis.modularity import ModelStats, format_specialisation_table, format_summary_table
from agents.experiment.atomic import atomic_path, atomic_write_text, write_csv

from .meta import meta_lines, write_meta
from .protocol import Protocol
from .summary import CSV_FIELDS, FLOOR, LEARNED, csv_rows, table_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extra:
    """What a table adds to the folder of a split table (the modularity tables: the selection bar, the choice).

    :param summary: entries added to ``summary.json``.
    :param sections: ``(heading, markdown)`` sections of ``report.md``, placed before the figures.
    """

    summary: dict[str, Any] = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def number_cell(value: float | None, digits: int = 3) -> str:
    """A table cell: ``value`` at ``digits`` decimals, ``-`` when not recorded."""
    return "-" if value is None else f"{value:.{digits}f}"


def rate_cell(rate: dict[str, Any] | None, digits: int = 1) -> str:
    """A table cell for an estimated rate: ``4.3% ± 0.5`` (``rate`` and ``mcse`` as fractions, the Monte Carlo
    standard error in percentage points), ``-`` when not computed."""
    return "-" if rate is None else f"{100 * rate['rate']:.{digits}f}% ± {100 * rate['mcse']:.{digits}f}"


def _ci(value: dict[str, Any]) -> str:
    """``0.812 [0.750, 0.900]``."""
    return f"{value['point']:.3f} [{value['ci'][0]:.3f}, {value['ci'][1]:.3f}]"


def _title(condition: str) -> str:
    return "all OOD" if condition == ALL_OOD else condition


def _verdict_text(row: dict[str, Any]) -> str:
    """``better (P 0.84 [0.62, 1.00], p 0.004, Holm 0.03)``, with the collapse note if any."""
    text = (
        f"{row['verdict']} (P {row['point']:.2f} [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}], "
        f"p {row['p_value']:.3g}, Holm {row['p_holm']:.3g})"
    )
    return f"{text}; {row['modularity']}" if row["modularity"] else text


def _primary_section(summary: dict[str, Any]) -> str:
    """The declared primary endpoint and each RIM model's verdict on it."""
    protocol = summary["protocol"]
    rows = [
        [f"`{r['model']}` vs `{r['baseline']}`", f"{r['n_seeds']} vs {r['baseline_seeds']}", _verdict_text(r)]
        for r in summary["primary"]
    ]
    text = (
        f"Declared in `protocol.yaml`: final deterministic {protocol['metric']} pooled over "
        f"{', '.join(f'`{c}`' for c in protocol['pooled'])}. {protocol['declared']} P = P(model > baseline) "
        "averaged over those conditions, its 95% CI from resampling whole seeds; p: two-sided permutation test over "
        f"whole seeds; Holm: adjusted across the table's comparisons on it. Level {protocol['alpha']}."
    )
    family = len(summary["primary"])
    unreachable = [r for r in summary["primary"] if r["min_p"] * family > protocol["alpha"]]
    if unreachable:
        text += (
            " "
            + "; ".join(
                f"`{r['model']}` ({r['n_seeds']} vs {r['baseline_seeds']} seeds) cannot reach 95% with this test: its "
                f"smallest possible p is {r['min_p']:.3g}, {r['min_p'] * family:.3g} after Holm"
                for r in unreachable
            )
            + "."
        )
    return text + "\n\n" + md_table(["comparison", "seeds", "verdict"], rows) if rows else text


def _verdict_section(summary: dict[str, Any]) -> str:
    """Verdict per condition (return) for each RIM model against each baseline (secondary, Holm across
    conditions)."""
    rows = [r for r in summary["improvements"] if r["metric"] == "return"]
    pairs = list(dict.fromkeys((r["model"], r["baseline"]) for r in rows))
    if not pairs:
        return "No verdicts: they need a RIM model and the LSTM among the runs."
    index = {(r["model"], r["baseline"], r["condition"]): r for r in rows}
    floor = set(summary["cannot_separate"])
    body = []
    for condition in summary["conditions"]:
        name = _title(condition) + (" (cannot separate: every model ~0)" if condition in floor else "")
        cells = [_verdict_text(index[(m, b, condition)]) if (m, b, condition) in index else "-" for m, b in pairs]
        body.append([name, *cells])
    header = ["condition", *(f"{m} vs {b}" for m, b in pairs)]
    return (
        "Final deterministic return; P = P(model > baseline), the probability that a random seed of the model "
        "scores higher than a random seed of the baseline (ties count half), with its 95% CI from resampling whole "
        "seeds; p: two-sided permutation test over whole seeds. Single conditions are secondary: Holm-adjusted "
        "across the table's conditions per model and baseline; `all OOD` is the primary endpoint (Holm across the "
        "table's comparisons). *better* "
        "/ *worse*: the adjusted p-value is at most the level and P is above / below 0.5; otherwise *no difference "
        "at 95%*.\n\n" + md_table(header, body)
    )


def _learned_section(summary: dict[str, Any]) -> str:
    """How many seeds of each model learned their training levels (iid success >= 0.9)."""
    counts = summary["iid_learned"]
    lines = [f"- `{m}`: {c['learned']}/{c['seeds']} seeds" for m, c in counts.items()]
    lstm = counts.get("lstm")
    if lstm is not None and lstm["learned"] * 2 <= lstm["seeds"]:
        lines.append(
            f"\n**The LSTM reaches iid success >= {LEARNED} in only {lstm['learned']}/{lstm['seeds']} seeds: the "
            "budget is too small for the OOD numbers to mean much (docs/design.md, results protocol).**"
        )
    return f"Seeds whose final iid success rate is >= {LEARNED}:\n\n" + "\n".join(lines)


def _metric_section(summary: dict[str, Any], metric: str) -> str:
    """Per condition and model: seeds, IQM and mean with CIs, P(> each baseline) and verdict, for one metric."""
    rows = [r for r in summary["improvements"] if r["metric"] == metric]
    index = {(r["model"], r["baseline"], r["condition"]): r for r in rows}
    baselines = list(dict.fromkeys(r["baseline"] for r in rows)) or [summary["protocol"]["baseline"]]
    body = []
    for condition in summary["conditions"]:
        for label, model in summary["models"].items():
            cell = model["conditions"].get(condition, {}).get(metric)
            if cell is None:
                continue
            cells = [_title(condition), label, str(cell["n_seeds"]), _ci(cell["iqm"]), _ci(cell["mean"])]
            for baseline in baselines:
                imp = index.get((label, baseline, condition))
                p = f"{_ci(imp)}, p {imp['p_value']:.3g} (Holm {imp['p_holm']:.3g})" if imp else "-"
                cells += [p, imp["verdict"] if imp else "-"]
            body.append(cells)
    header = ["condition", "model", "seeds", "IQM [95% CI]", "mean [95% CI]"]
    for baseline in baselines:
        header += [f"P(model > {baseline}) [95% CI], p", f"verdict vs {baseline}" if len(baselines) > 1 else "verdict"]
    return md_table(header, body)


def _modularity_section(modularity: dict[str, ModelStats], episodes: int) -> str:
    """The activation statistics of the RIM models, averaged over seeds."""
    if not modularity:
        return "No RIM runs with activation statistics."
    return (
        f"Activation statistics of every RIM run over {episodes} deterministic episodes per condition "
        "(`rims-visualize --stats-only`), averaged over seeds: active units per step, switch rate (fraction of "
        "units whose active flag changes between consecutive steps) and each unit's share of steps, busiest unit "
        "first (units are exchangeable between seeds, so frequencies are sorted per seed, then averaged). A seed "
        "counts as *collapsed* on a condition when a unit is active in > 99% or < 1% of the steps or the switch "
        "rate is < 0.01; that alone does not say the selection never changes (one always-on unit, or a set chosen "
        "per episode and then held, also count). The *cases* say how: `fixed` (one active set covers >= 99% of "
        "the steps of every episode: the RIM is in effect a smaller LSTM), `per-episode` (each episode's own set "
        "covers >= 99% of its steps) or `switching` (the set changes within episodes); each episode's first step is "
        "left out. Seeds harvested before the cases were recorded show only the cases their switch rate and unit "
        "frequencies determine.\n\n" + format_summary_table(modularity) + _specialisation_text(modularity)
    )


def _specialisation_text(modularity: dict[str, ModelStats]) -> str:
    """The specialisation table (:func:`agents.analysis.modularity.format_specialisation_table`) with its
    explanation, or nothing when no seed recorded it."""
    table = format_specialisation_table(modularity)
    if not table:
        return ""
    return (
        "\n\nSpecialisation: mutual information (bits) between each unit's activity, and the active set, and each "
        "environment factor, minus its circular-shift baseline's mean (per seed in `specialisation.csv`; "
        "`agents/analysis/specialisation.py`).\n\n" + table
    )


def _seeds_text(seeds: list[int] | dict[str, list[int]]) -> str:
    """``[0, 1, 2]`` for a list; ``lstm [0, 1], rim [0]`` per model, or one list when every model has the same."""
    if not isinstance(seeds, dict):
        return str(seeds)
    distinct = {tuple(v) for v in seeds.values()}
    if len(distinct) == 1:
        return f"{list(next(iter(distinct)))} for every model"
    return "; ".join(f"{model} {values}" for model, values in seeds.items())


def render_report(
    summary: dict[str, Any],
    meta: dict[str, Any],
    modularity: dict[str, ModelStats],
    sections: list[tuple[str, str]] | None = None,
) -> str:
    """The full ``report.md`` of a split table (``sections``: a table's own, before the figures)."""
    budget = meta["budget"]
    rates = ", ".join(f"{m} {info.get('learning_rate')}" for m, info in summary["models"].items())
    source = "from the `tune` table" if budget.get("learning_rates") else "the agent preset's default, not tuned"
    floor = summary["cannot_separate"]
    parts = [
        f"# Table `{summary['table']}`: RIM vs LSTM out of distribution (split `{summary['split']}`)",
        meta_lines(meta),
        f"Budget: {budget['frames']:,} training frames per run, seeds {_seeds_text(budget['seeds'])}, "
        f"{budget['final_episodes']} final deterministic episodes per condition, periodic evaluation every "
        f"{budget['eval_every_frames']:,} frames with {budget['eval_episodes']} episode(s). PPO; learning rates "
        f"({source}): {rates}.",
        "## Primary endpoint",
        _primary_section(summary),
        "## Verdicts per condition (secondary)",
        _verdict_section(summary),
    ]
    if floor:
        parts.append(
            f"Conditions where every model's mean success rate is <= {FLOOR}: {', '.join(floor)}. They cannot "
            "separate the models: an intermediate size or a longer budget would."
        )
    parts += ["## Did the models learn their training levels?", _learned_section(summary)]
    for metric, title in METRIC_TITLES.items():
        parts += [f"## {title}", _metric_section(summary, metric)]
    parts += [
        "## Is the modularity used?",
        _modularity_section(modularity, budget.get("stats_episodes", 0)),
        *(part for heading, text in sections or [] for part in (f"## {heading}", text)),
        "## Figures",
        "Learning curves (mean return over seeds of the periodic evaluations, 95% band):\n\n"
        "![learning curves](learning_curves.png)",
        "IQM of the final return and success rate per condition, 95% CI:\n\n![OOD bars](ood_bars.png)",
    ]
    if summary["notes"]:
        parts += ["## Notes", "\n".join(f"- {note}" for note in summary["notes"])]
    return "\n\n".join(parts) + "\n"


def write_table(
    comparison: Comparison,
    modularity: dict[str, ModelStats],
    meta: dict[str, Any],
    model_info: dict[str, dict[str, Any]],
    notes: list[str],
    out_dir: Path,
    protocol: Protocol,
    extra: Extra | None = None,
) -> list[Path]:
    """Write the committed folder of a split table (every file atomically).

    :param extra: what the table adds to ``summary.json`` and ``report.md``.
    :returns: the paths written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = extra or Extra()
    summary = table_summary(meta["table"], comparison, modularity, model_info, notes, protocol, extra.summary)
    files = [out_dir / name for name in ("summary.json", "summary.csv", "learning_curves.png", "ood_bars.png")]
    atomic_write_text(files[0], json.dumps(summary, indent=2) + "\n")
    write_csv(files[1], csv_rows(summary), CSV_FIELDS)
    with atomic_path(files[2]) as tmp:
        plot_learning_curves(comparison, tmp)
    with atomic_path(files[3]) as tmp:
        plot_ood_bars(comparison, tmp)
    files.append(write_meta(meta, out_dir))
    report = out_dir / "report.md"
    atomic_write_text(report, render_report(summary, meta, modularity, extra.sections))
    log.info("wrote table %s to %s", meta["table"], out_dir)
    return [report, *files]
