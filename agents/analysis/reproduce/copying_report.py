"""The committed folder of the copying table: seeds aggregated with 95% bootstrap CIs, verdicts, learning curves.

A verdict compares a RIM model with the LSTM on the test CE of one blank length with the split tables' rule: a
two-sided permutation test over seeds (:func:`agents.analysis.compare.seed_tests.permutation_p`, exact), Holm-
adjusted across the blank lengths; ``better`` (lower CE) / ``worse`` when the adjusted p-value is at most 0.05,
else ``no difference at 95%``. The difference of mean CE is shown with its 95% bootstrap CI (each model's seeds
resampled). With 3 seeds per model the exact test cannot go below p = 0.10, so no verdict can reach 95%.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.analysis.compare.seed_tests import holm, min_p, permutation_p, pooled_improvement
from agents.analysis.compare.seed_tests import verdict as seed_verdict
from agents.experiment.atomic import atomic_path, atomic_write_text, write_csv
from agents.experiment.copying import METRICS, chance_ce
from agents.experiment.evaluation import bootstrap_ci

from .copying import save_record
from .meta import meta_lines, write_meta
from .report import md_table

TITLES = {
    "ce": "CE, all positions (the paper's)",
    "copy_ce": "CE, copied positions",
    "accuracy": "copied-symbol accuracy",
    "sequence_accuracy": "sequences copied without error",
}
CSV_FIELDS = ("model", "blank", "metric", "n_seeds", "seeds", "values", "mean", "low", "high")
REPS = 2000
NO_VERDICTS = "No verdicts: they need a RIM model and the LSTM."
TOO_FEW = "not enough seeds for a verdict (fewer than 2)"


def _difference_ci(x: Sequence[float], y: Sequence[float], reps: int = REPS, seed: int = 0) -> tuple[float, float]:
    """95% stratified-bootstrap CI of ``mean(x) - mean(y)`` (each group resampled on its own)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    diffs = a[rng.integers(0, a.size, (reps, a.size))].mean(1) - b[rng.integers(0, b.size, (reps, b.size))].mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per model: seeds, parameters, time per step, and per test blank and metric the seeds' values, mean and CI."""
    models: dict[str, Any] = {}
    for name in dict.fromkeys(r["model"] for r in results):
        runs = sorted((r for r in results if r["model"] == name), key=lambda r: r["seed"])
        cells: dict[str, Any] = {}
        for blank in runs[0]["final"]:
            cells[blank] = {}
            for metric in METRICS:
                values = [r["final"][blank][metric] for r in runs]
                low, high = bootstrap_ci(values)
                cells[blank][metric] = {"values": values, "mean": float(np.mean(values)), "ci": [low, high]}
        models[name] = {
            "seeds": [r["seed"] for r in runs],
            "parameters": runs[0]["parameters"],
            "seconds_per_step": float(np.mean([r["seconds_per_step"] for r in runs])),
            "cpu_seconds_per_step": float(np.mean([r["cpu_seconds_per_step"] for r in runs])),
            "final": cells,
        }
        if any(not r["curve"] for r in runs):
            models[name]["seeds_without_curve"] = [r["seed"] for r in runs if not r["curve"]]
    return models


def verdicts(models: dict[str, Any], baseline: str = "lstm") -> list[dict[str, Any]]:
    """Every RIM model against ``baseline`` on the test CE of each blank length (see the module docstring)."""
    if baseline not in models:
        return []
    out = []
    for name, model in models.items():
        if not name.startswith("rim"):
            continue
        rows = []
        for blank, cell in model["final"].items():
            base = models[baseline]["final"].get(blank)
            if base is None:
                continue
            x, y = cell["ce"]["values"], base["ce"]["values"]
            low, high = _difference_ci(x, y)
            lower = pooled_improvement(-np.asarray(x), -np.asarray(y))  # P(RIM's CE < LSTM's CE)
            rows.append({"model": name, "baseline": baseline, "blank": blank, "ce_difference": cell["ce"]["mean"]
                         - base["ce"]["mean"], "ci": [low, high], "p_lower_ce": lower,
                         "p_value": permutation_p(x, y), "min_p": min_p(len(x), len(y))})  # fmt: skip
        for row, adjusted in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
            row["p_holm"] = adjusted
            row["verdict"] = seed_verdict(row["p_lower_ce"], adjusted)
            if min(len(models[name]["seeds"]), len(models[baseline]["seeds"])) < 2:
                row["verdict"] = TOO_FEW
        out += rows
    return out


def plot_curves(results: Sequence[dict[str, Any]], blanks: Sequence[int], path: Path) -> None:
    """Training CE and periodic test CE per blank length against steps: mean over seeds, band from min to max
    (the seeds whose curve was kept; ``n`` in the legend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [("train_ce", "training CE (blank 50 batches)"), *((f"ce_{b}", f"test CE, blank {b}") for b in blanks)]
    fig = Figure(figsize=(4.2 * len(keys), 3.4), layout="constrained")
    for i, (key, title) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for name in dict.fromkeys(r["model"] for r in results):
            curves = [r["curve"] for r in results if r["model"] == name and r["curve"]]
            if not curves:
                continue
            steps = [row["step"] for row in min(curves, key=len)]
            values = np.array([[row[key] for row in curve[: len(steps)]] for curve in curves])  # (seeds, points)
            ax.plot(steps, values.mean(0), marker=".", label=f"{name} (n={len(curves)})")
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
        ax.set(title=title, xlabel="training step", ylabel="cross entropy (nats)", yscale="log")
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no learning curve kept", ha="center", va="center", transform=ax.transAxes)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110)


def _cell(cell: dict[str, Any]) -> str:
    return f"{cell['mean']:.3f} [{cell['ci'][0]:.3f}, {cell['ci'][1]:.3f}]"


def _chance_scores(settings: dict[str, Any]) -> str:
    """``0.297 (blank 50), 0.095 (blank 200)``: the CE of predicting every blank and guessing the symbols."""
    return ", ".join(f"{chance_ce(int(b)):.3f} (blank {b})" for b in settings["test_blanks"])


def results_table(summary: dict[str, Any]) -> str:
    """Markdown: a row per model and test blank length, each metric's mean over seeds [95% CI]."""
    header = ["model", "test blank", "seeds", *(TITLES[m] for m in METRICS)]
    rows = [
        [name, blank, str(len(model["seeds"])), *(_cell(cells[m]) for m in METRICS)]
        for name, model in summary["models"].items()
        for blank, cells in model["final"].items()
    ]
    return md_table(header, rows)


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """One markdown bullet per verdict: RIM model against the LSTM on the test CE of one blank length."""
    return [
        f"- blank {v['blank']}: `{v['model']}` vs `{v['baseline']}`: **{v['verdict']}** (difference of mean CE "
        f"{v['ce_difference']:+.3f}, 95% CI [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]; P(lower CE) "
        f"{v['p_lower_ce']:.2f}, permutation p {v['p_value']:.2f}, Holm {v['p_holm']:.2f}; the smallest p "
        f"{v['min_p']:.2f} this many seeds allow)"
        for v in summary["verdicts"]
    ]


def render_readme_block(summary: dict[str, Any]) -> str:
    """The README's block of a copying table (without the markers): the results table and the verdicts."""
    s = summary["settings"]
    chance = _chance_scores(s)
    text = [
        f"Mean over seeds [95% bootstrap CI] on {s['test_size']} fixed test sequences per blank length; "
        f"trained on blank {s['train_blank']}, {s['steps']:,} steps. Predicting every blank and guessing the "
        f"copied symbols scores a CE of {chance}.",
        "",
        results_table(summary),
        "",
        "Test CE, RIM model against the LSTM (difference of means with its 95% CI; permutation test over seeds, "
        "Holm across blank lengths):",
        "",
        *(verdict_lines(summary) or [NO_VERDICTS]),
    ]
    return "\n".join(text) + "\n"


def _missing_curves(summary: dict[str, Any]) -> str:
    """The seeds whose learning curve was not kept (tables trained before ``curves.csv``), per model."""
    missing = {name: m["seeds_without_curve"] for name, m in summary["models"].items() if m.get("seeds_without_curve")}
    if not missing:
        return ""
    listed = "; ".join(f"`{name}` {seeds}" for name, seeds in missing.items())
    return f" Not kept (their run folders were removed before curves were recorded): {listed}."


def render_report(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """``report.md`` of the copying table."""
    s = summary["settings"]
    table = results_table(summary)
    verdict_rows = verdict_lines(summary)
    cost = [
        f"- `{name}`: {m['parameters']:,} parameters, {m['seconds_per_step']:.3f} s per step "
        f"({m['cpu_seconds_per_step']:.3f} s CPU)"
        for name, m in summary["models"].items()
    ]
    chance = _chance_scores(s)
    setup = (
        f"Train on dormant phase (blank length) {s['train_blank']}, test on {s['test_blanks']}. {s['steps']:,} "
        f"training steps of {s['batch_size']} sequences, Adam lr {s['learning_rate']}, gradient clipping "
        f"{s['clip']}, dropout {s['dropout']}; total width {s['hidden_size']} for every core, embedding "
        f"{s['embed_size']}; RIMs {s['num_units']} units, k={s['k']}, the library's paper defaults for the "
        f"attention sizes. Test sets: {s['test_size']} fixed sequences per blank length, the same for every "
        "model and seed. Means over seeds with 95% bootstrap CIs."
    )
    paper = (
        "The paper's CE averages over every position, blanks included: a model that predicts every blank and "
        f"guesses the copied symbols scores {chance}; the paper reports RIMs 0.00 and LSTM 4.32 at blank 200."
    )
    parts = [
        "# Table `copying`: the RIMs paper's copying task (Goyal et al. 2019, Table 1)",
        meta_lines(meta),
        setup,
        paper,
        "## Verdicts (test CE, RIM model against the LSTM)",
        "\n".join(verdict_rows) or NO_VERDICTS,
        "## Results",
        table,
        "## Cost on this machine",
        "\n".join(cost),
        "## Learning curves",
        "Training CE and test CE on the periodic evaluations (mean over seeds, band: min to max; per seed in "
        f"`curves.csv`).{_missing_curves(summary)}\n\n![learning curves](learning_curves.png)",
    ]
    return "\n\n".join(parts) + "\n"


def csv_rows(models: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (:data:`CSV_FIELDS`): a model x blank x metric each."""
    rows = []
    for name, model in models.items():
        seeds = ";".join(map(str, model["seeds"]))
        for blank, cells in model["final"].items():
            for metric, cell in cells.items():
                values = ";".join(f"{v:.6g}" for v in cell["values"])
                low, high = cell["ci"]
                rows.append(dict(zip(CSV_FIELDS, (name, blank, metric, len(model["seeds"]), seeds, values,
                                                  cell["mean"], low, high), strict=True)))  # fmt: skip
    return rows


def write_copying(
    results: Sequence[dict[str, Any]], settings: dict[str, Any], meta: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Write ``summary.json``, ``summary.csv``, ``learning_curves.png``, ``meta.json``, ``report.md`` and the
    per-seed record (``seeds.csv``, ``curves.csv``) of ``results`` (every seed of the table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    models = aggregate(results)
    summary = {"table": "copying", "settings": settings, "models": models, "verdicts": verdicts(models)}
    files = [out_dir / "summary.json", out_dir / "summary.csv", out_dir / "learning_curves.png"]
    atomic_write_text(files[0], json.dumps(summary, indent=2) + "\n")
    write_csv(files[1], csv_rows(models), CSV_FIELDS)
    with atomic_path(files[2]) as tmp:
        plot_curves(results, settings["test_blanks"], tmp)
    files.append(write_meta(meta, out_dir))
    files += save_record(results, out_dir)
    report = out_dir / "report.md"
    atomic_write_text(report, render_report(summary, meta))
    return [report, *files]


def rewrite_verdicts(out_dir: Path) -> list[Path]:
    """Recompute the verdicts of a committed copying folder from its per-seed values and rewrite ``summary.json``
    and ``report.md`` (the runs and the figure are not touched)."""
    summary = json.loads((out_dir / "summary.json").read_text())
    meta = json.loads((out_dir / "meta.json").read_text())
    summary["verdicts"] = verdicts(summary["models"])
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", render_report(summary, meta))
    return [out_dir / "summary.json", out_dir / "report.md"]
