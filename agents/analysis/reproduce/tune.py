"""The ``tune`` table: one learning-rate grid for every core on the split's validation levels, and the choice.

The rule, stated before the runs (:func:`choose`): per model, the rates whose mean final *validation*
return over the tuning seeds is within :data:`NEAR_TIE` of the best mean are near-ties; among them the rate
whose worst seed scores highest wins (stability: a rate that collapses one seed in three loses to one that
does not), then the first in grid order. The validation levels (``env.validation_seeds``) are levels of the
training distribution that no table trains on or reports, so the test levels never choose anything. Every
other table runs each model with its chosen rate and fresh seeds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.analysis.compare import load_runs
from agents.experiment.atomic import atomic_write_text, write_csv
from envs.splits import VALIDATION

from .meta import meta_lines, repo_relative, write_meta
from .tables import LEARNING_RATE, ReproduceError

log = logging.getLogger(__name__)

RUN_FIELDS = ("model", "learning_rate", "seed", "validation_return", "validation_success", "run")
NEAR_TIE = 0.02  # mean validation returns this close to the best are a tie, broken by the best worst seed


def tune_runs(folders: dict[str, Path]) -> list[dict[str, Any]]:
    """One row per finished tuning run: model, learning rate, seed, final validation return and success, folder.

    :param folders: ``{model: its tune sweep folder}``; a missing folder or one without finished runs
        contributes nothing.
    """
    rows = []
    for model, folder in folders.items():
        if not folder.is_dir():
            log.warning("no tune sweep for %s at %s", model, folder)
            continue
        try:
            runs = load_runs([folder])
        except ValueError as error:
            log.warning("no finished tune runs for %s: %s", model, error)
            continue
        for run in runs:
            if VALIDATION not in run.scores:
                raise ReproduceError(
                    f"{run.path}: no {VALIDATION} result in eval.json (tuning evaluates eval.conditions=[{VALIDATION}])"
                )
            rows.append(
                {
                    "model": model,
                    "learning_rate": float(run.config["agent"]["learning_rate"]),
                    "seed": run.seed,
                    "validation_return": run.scores[VALIDATION]["return"],
                    "validation_success": run.scores[VALIDATION]["success"],
                    "run": repo_relative(run.path),
                }
            )
    return sorted(rows, key=lambda r: (list(folders).index(r["model"]), r["learning_rate"], r["seed"]))


def choose(rows: Sequence[dict[str, Any]], grid: Sequence[float]) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Mean final validation return per model and rate, and per model the rate the rule of this module chooses.

    :returns: ``({model: {rate: {"mean_return", "worst_return", "mean_success", "seeds", "returns"}}},
        {model: rate})``; a model is chosen for only when every rate of ``grid`` has at least one finished run.
    """
    means: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        means[model] = {}
        for rate in grid:
            cell = [r for r in rows if r["model"] == model and np.isclose(r["learning_rate"], rate)]
            if cell:
                returns = [r["validation_return"] for r in cell]
                means[model][str(rate)] = {
                    "mean_return": float(np.mean(returns)),
                    "worst_return": float(np.min(returns)),
                    "mean_success": float(np.mean([r["validation_success"] for r in cell])),
                    "seeds": [r["seed"] for r in cell],
                    "returns": returns,
                }
    choice = {}
    for model, cells in means.items():
        if len(cells) == len(grid):
            top = max(cells[str(rate)]["mean_return"] for rate in grid)
            ties = [rate for rate in grid if cells[str(rate)]["mean_return"] >= top - NEAR_TIE]
            choice[model] = float(max(ties, key=lambda rate, c=cells: c[str(rate)]["worst_return"]))
        else:
            log.warning("tune: %s lacks finished runs for some rates; no choice made", model)
    return means, choice


def render_tune_report(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """``report.md`` of the tune table: the grid, every run's number and the choice."""
    grid = summary["grid"]
    header = ["model", *(f"lr {rate}" for rate in grid[LEARNING_RATE]), "chosen"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, cells in summary["means"].items():
        shown = []
        for rate in grid[LEARNING_RATE]:
            cell = cells.get(str(rate))
            shown.append(
                "-" if cell is None else f"{cell['mean_return']:.3f} ({', '.join(f'{v:.3f}' for v in cell['returns'])})"
            )
        lines.append("| " + " | ".join([model, *shown, str(summary["choice"].get(model, "-"))]) + " |")
    runs = ["| model | learning rate | seed | validation return | validation success |", "|---|---|---|---|---|"]
    runs += [
        f"| {r['model']} | {r['learning_rate']} | {r['seed']} | {r['validation_return']:.3f} "
        f"| {r['validation_success']:.2f} |"
        for r in summary["runs"]
    ]
    return (
        "\n\n".join(
            [
                f"# Table `tune`: learning rate per core (split `{summary['split']}`, validation levels)",
                meta_lines(meta),
                f"Grid: `{LEARNING_RATE}` in {grid[LEARNING_RATE]}, training seeds {grid['seeds']}, "
                f"{meta['budget']['frames']:,} frames per run; final evaluation on the `{VALIDATION}` condition only "
                "(levels of the training distribution that no table trains on or reports), "
                f"{meta['budget']['final_episodes']} deterministic episodes. Chosen per model (rule stated before the "
                f"runs): among the rates whose mean final validation return is within {NEAR_TIE} of the best mean, "
                "the one with the best worst seed (stability), then the first in grid order.",
                "## Mean final validation return (per seed in parentheses)",
                "\n".join(lines),
                "## Every run",
                "\n".join(runs),
            ]
        )
        + "\n"
    )


def write_tune(
    rows: list[dict[str, Any]], grid: Sequence[float], seeds: Sequence[int], meta: dict[str, Any], out_dir: Path
) -> dict[str, float]:
    """Write ``summary.json`` (grid, runs, means, choice), ``summary.csv`` (runs), ``report.md`` and ``meta.json``.

    :returns: the choice ``{model: learning rate}``.
    """
    means, choice = choose(rows, grid)
    summary = {
        "table": "tune",
        "split": meta.get("split", "doorkey"),
        "grid": {LEARNING_RATE: list(grid), "seeds": list(seeds)},
        "runs": rows,
        "means": means,
        "choice": choice,
    }
    write_choice_folder(out_dir, summary, (rows, RUN_FIELDS), meta, render_tune_report(summary, meta))
    return choice


def write_choice_folder(
    out_dir: Path,
    summary: dict[str, Any],
    rows: tuple[Sequence[dict[str, Any]], Sequence[str]],
    meta: dict[str, Any],
    report: str,
) -> None:
    """Write the committed folder of a table that chooses (``tune``, ``modularity_tune``), every file atomically:
    ``summary.json``, ``summary.csv`` (its per-seed rows), ``meta.json`` and ``report.md``.

    :param rows: the per-seed rows and their CSV fields.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_csv(out_dir / "summary.csv", rows[0], rows[1])
    write_meta(meta, out_dir)
    atomic_write_text(out_dir / "report.md", report)


def read_choice(path: Path, table: str, what: str) -> dict[str, Any]:
    """The ``choice`` of a choosing table's ``summary.json``.

    :param table: the table that writes it; ``what``: what it chooses, for the message.
    :raises ReproduceError: the file is missing or holds no choice, saying which command writes it.
    """
    if not path.is_file():
        raise ReproduceError(f"no {what}: {path} is missing. Run `python scripts/reproduce.py {table}` first")
    choice = json.loads(path.read_text()).get("choice")
    if not isinstance(choice, dict) or not choice:
        raise ReproduceError(f"{path} holds no {what} yet; rerun `python scripts/reproduce.py {table}`")
    return choice


def load_choice(path: Path) -> dict[str, float]:
    """The tuned learning rate per model from a tune ``summary.json``.

    :raises ReproduceError: the file is missing or has no choice.
    """
    choice = read_choice(path, "tune", "tuned learning rates")
    return {str(k): float(v) for k, v in choice.items()}
