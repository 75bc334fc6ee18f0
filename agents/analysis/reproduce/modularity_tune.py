"""The ``modularity_tune`` table (issue 26 item 5, stage 1): each remedy family's coefficient, on validation levels.

Every candidate preset of :data:`~agents.analysis.reproduce.tables.REMEDY_FAMILIES` trains on doorkey with the
doorkey budget at rim's tuned learning rate, seeds 1000 and 1001 (the tables use 0-9), evaluated on the
``validation`` condition only. Each finished run's selection statistics are then played on the validation levels
(:func:`agents.analysis.modularity.run_stats`, :data:`~agents.analysis.reproduce.remedy_rules.STATS_EPISODES`
deterministic episodes), and :func:`~agents.analysis.reproduce.remedy_rules.choose_coefficients` chooses per
family, by the rule stated before the runs (the module docstring of
:mod:`~agents.analysis.reproduce.remedy_rules`): per seed, *learns* = validation success >= 0.9 and *used* = every
unit active in 5%-95% of the steps and a within-episode switch rate >= 0.05; per candidate, the seeds that learn
and are used; per family the highest count, ties to the higher worst-seed validation return, then to the smaller
coefficient. The test levels choose nothing. ``scripts/reproduce/modularity_tune/`` holds every seed's row
(``summary.csv``), the choice (``summary.json``), ``report.md`` and ``meta.json``; the ``modularity`` table reads
the choice from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.analysis.modularity import StatsSettings, run_stats
from envs.splits import VALIDATION

from .meta import meta_lines, repo_relative
from .remedy_rules import COEFFICIENT_RULE, choose_coefficients, learns, used
from .report import md_table
from .runner import choice_meta, finished_runs, run_sweeps
from .tables import MODULARITY_TUNE, REMEDY_FAMILIES, REMEDY_KEYS, Plan, ReproduceError, family_of
from .tune import read_choice, write_choice_folder

CHOICE_HEADER = ["family", "candidate", "coefficient", "seeds that learn and are used", "worst validation return",
                 "mean validation return", ""]  # fmt: skip
SEED_HEADER = ["family", "model", "coefficient", "seed", "validation return", "validation success",
               "least active unit", "most active unit", "switch rate", "case", "learns", "used"]  # fmt: skip

ROW_FIELDS = (
    "family", "model", "coefficient", "seed", "validation_return", "validation_success", "min_unit_frequency",
    "max_unit_frequency", "switch_rate", "selection_case", "learns", "used", "run",
)  # fmt: skip


def candidate_rows(plan: Plan, stats: StatsSettings) -> list[dict[str, Any]]:
    """One row per finished candidate run: its family, coefficient, and selection statistics on validation levels.

    :param stats: how the statistics are played; its conditions must be ``validation`` only.
    :raises ReproduceError: statistics of other conditions.
    """
    if tuple(stats.conditions or ()) != (VALIDATION,):
        raise ReproduceError(f"{MODULARITY_TUNE} reads the {VALIDATION!r} condition only, got {stats.conditions}")
    rows = []
    for model, runs in finished_runs(plan).items():
        family = family_of(model)
        for run in runs:
            [played] = run_stats(run.path, stats)
            freqs = played["unit_frequency"]
            rows.append(
                {"family": family, "model": model, "coefficient": run.config["model"].get(REMEDY_KEYS[family]),
                 "seed": run.seed, "validation_return": played["mean_return"],
                 "validation_success": played["mean_success"], "min_unit_frequency": min(freqs),
                 "max_unit_frequency": max(freqs), "switch_rate": played["switch_rate"],
                 "selection_case": played.get("selection_case"), "learns": learns(played["mean_success"]),
                 "used": used(freqs, played["switch_rate"]), "run": repo_relative(run.path)}
            )  # fmt: skip
    return rows


def _rate_text(meta: dict[str, Any]) -> str:
    """``rim's tuned learning rate 0.001`` (a smoke run: the agent preset's default)."""
    rates = set((meta["budget"].get("learning_rates") or {}).values())
    return f"rim's tuned learning rate {rates.pop():g}" if len(rates) == 1 else "the agent preset's learning rate"


def render_report(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """``report.md``: the rule, each candidate's score and the choice per family, then every seed."""
    scores, choice = summary["scores"], summary["choice"]
    coefficient = {r["model"]: r["coefficient"] for r in summary["runs"]}
    ranked = [
        [family, f"`{model}`", str(coefficient.get(model, "-")), *(
            [f"{scores[model]['score']}/{len(scores[model]['seeds'])}", f"{scores[model]['worst_return']:.3f}",
             f"{scores[model]['mean_return']:.3f}"] if model in scores else ["-", "-", "-"]),
         "**chosen**" if choice.get(family) == model else ""]
        for family, candidates in summary["families"].items() for model in candidates
    ]  # fmt: skip
    seeds = [
        [r["family"], f"`{r['model']}`", str(r["coefficient"]), str(r["seed"]), f"{r['validation_return']:.3f}",
         f"{r['validation_success']:.2f}", f"{r['min_unit_frequency']:.3f}", f"{r['max_unit_frequency']:.3f}",
         f"{r['switch_rate']:.3f}", str(r["selection_case"]), "yes" if r["learns"] else "no",
         "yes" if r["used"] else "no"]
        for r in summary["runs"]
    ]  # fmt: skip
    unchosen = [family for family in summary["families"] if family not in choice]
    parts = [
        f"# Table `{MODULARITY_TUNE}`: each remedy family's coefficient (split `{summary['split']}`, "
        "validation levels)",
        meta_lines(meta),
        f"Candidates {sum(map(len, summary['families'].values()))} in {len(summary['families'])} families, training "
        f"seeds {summary['seeds']}, {meta['budget']['frames']:,} frames per run at {_rate_text(meta)}. Every "
        f"number below is a selection statistic of {summary['stats']['episodes']} deterministic episodes on the "
        f"`{VALIDATION}` condition (levels of the training distribution that no table reports); the test levels "
        f"choose nothing. The rule, stated before the runs: {COEFFICIENT_RULE}.",
        "## Choice per family",
        md_table(CHOICE_HEADER, ranked),
    ]
    if unchosen:
        parts.append(f"No choice yet for {unchosen}: a candidate lacks some of the seeds {summary['seeds']}.")
    parts += [
        "## Every seed",
        md_table(SEED_HEADER, seeds),
    ]
    return "\n\n".join(parts) + "\n"


def write_modularity_tune(
    rows: list[dict[str, Any]], plan: Plan, stats: StatsSettings, meta: dict[str, Any], out_dir: Path
) -> dict[str, str]:
    """Write the committed folder (``summary.json``, ``summary.csv``, ``report.md``, ``meta.json``).

    :returns: the choice ``{family: model}``.
    """
    families = {f: [m for m in candidates if m in plan.models] for f, candidates in REMEDY_FAMILIES.items()}
    families = {f: candidates for f, candidates in families.items() if candidates}
    scores, choice = choose_coefficients(rows, families, plan.seeds)
    summary = {
        "table": MODULARITY_TUNE,
        "split": plan.preset.env,
        "rule": COEFFICIENT_RULE,
        "stats": {"condition": VALIDATION, "episodes": stats.episodes, "max_steps": stats.max_steps},
        "seeds": list(plan.seeds),
        "families": families,
        "runs": rows,
        "scores": scores,
        "choice": choice,
    }
    write_choice_folder(out_dir, summary, (rows, ROW_FIELDS), meta, render_report(summary, meta))
    return choice


def load_coefficient_choice(path: Path) -> dict[str, str]:
    """The candidate chosen per family, from a ``modularity_tune`` ``summary.json``.

    :raises ReproduceError: the file is missing or holds no choice.
    """
    return {str(family): str(model) for family, model in read_choice(path, MODULARITY_TUNE, "remedy choice").items()}


def reproduce_modularity_tune(
    plan: Plan, out_dir: Path, stats: StatsSettings, only_compare: bool = False, argv: Sequence[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Run (or only collect) the ``modularity_tune`` table and write its committed folder.

    :returns: ``(models whose sweep failed, {family: chosen candidate})``.
    :raises ReproduceError: no finished candidate run.
    """
    failed = [] if only_compare else run_sweeps(plan)
    rows = candidate_rows(plan, stats)
    if not rows:
        raise ReproduceError(f"no finished {MODULARITY_TUNE} runs under {plan.sweep_root}")
    return failed, write_modularity_tune(rows, plan, stats, choice_meta(plan, argv, stats), out_dir)
