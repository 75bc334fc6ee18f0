"""The committed record of the selection-freeze experiments: the probes of :mod:`agents.analysis.selection_causes`
run on many policies (untrained ones and trained run folders), written as CSV files and a short report.

Files (``scripts/reproduce/selection_causes/`` by default): ``probes.csv`` (one row per policy and feature
transform: the selection it makes and the features' drift), ``units.csv`` (one row per policy and unit: active
frequency and gradient norms), ``freeze.csv`` (one row per training run with rollout statistics: when its
selection froze) and ``report.md`` (the same numbers grouped by the policies' learning rate).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.analysis.selection_causes import (
    TRANSFORMS,
    PlayedEpisodes,
    feature_drift,
    freeze_point,
    gradient_by_unit,
    play_features,
    rim_module,
    selection_under,
    transform,
)
from agents.experiment.atomic import atomic_write_text, write_csv
from envs.splits import Split

log = logging.getLogger(__name__)

PROBE_FIELDS = (
    "policy",
    "learning_rate",
    "frames",
    "seed",
    "transform",
    "mean_return",
    "switch_rate",
    "min_frequency",
    "max_frequency",
    "distinct_sets",
    "first_step_sets",
    "margin",
    "consecutive_cosine",
    "common_share",
)
UNIT_FIELDS = ("policy", "learning_rate", "frames", "seed", "unit", "frequency", "query_grad", "dynamics_grad")
FREEZE_FIELDS = ("run", "learning_rate", "seed", "frames", "first_switch", "final_switch", "updates")


@dataclass(frozen=True)
class Policy:
    """One policy to probe.

    :param name: how the record names it (a run folder, or ``untrained/<seed>``).
    :param model: the agent.
    :param split: its split.
    :param learning_rate: the rate it was (or would be) trained at.
    :param frames: frames it was trained for (0: untrained).
    :param seed: its training seed.
    """

    name: str
    model: Any
    split: Split
    learning_rate: float
    frames: int
    seed: int


def probe(policy: Policy, condition: str, episodes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every probe on one policy: ``(probe rows, one per transform; unit rows)``.

    :param condition: the condition whose levels the policy plays (e.g. ``validation``).
    """
    played: PlayedEpisodes = play_features(policy.model, policy.split.evaluable[condition], episodes)
    drift = feature_drift(played.features)
    module = rim_module(policy.model)
    base = {
        "policy": policy.name,
        "learning_rate": policy.learning_rate,
        "frames": policy.frames,
        "seed": policy.seed,
    }
    rows = []
    for name in TRANSFORMS:
        selection = selection_under(module, transform(played.features, name, seed=policy.seed))
        rows.append(
            {
                **base,
                "transform": name,
                "mean_return": float(np.mean(played.returns)),
                "switch_rate": selection["switch_rate"],
                "min_frequency": min(selection["unit_frequency"]),
                "max_frequency": max(selection["unit_frequency"]),
                "distinct_sets": selection["distinct_sets"],
                "first_step_sets": selection["first_step_sets"],
                "margin": selection["margin"],
                **drift,
            }
        )
    units = [{**base, **row} for row in gradient_by_unit(policy.model, played)]
    return rows, units


def freeze_rows(runs: Sequence[tuple[Path, str, float, int]]) -> list[dict[str, Any]]:
    """One :func:`agents.analysis.selection_causes.freeze_point` row per run ``(folder, name in the record,
    learning rate, seed)``."""
    rows = []
    for folder, name, rate, seed in runs:
        point = freeze_point(folder / "metrics.csv")
        rows.append({"run": name, "learning_rate": rate, "seed": seed, **point})
    return rows


def _fmt(value: Any, key: str = "") -> str:
    """A table cell: a learning rate as written (``0.0001``), other floats to three decimals, ``None`` as a dash."""
    if value is None:
        return "-"
    if key == "learning_rate":
        return f"{float(value):g}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _group_table(rows: Sequence[dict[str, Any]], keys: Sequence[str], columns: Sequence[str]) -> list[str]:
    """A markdown table of the mean (and seed count) of ``columns`` per group of ``keys``."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    lines = ["| " + " | ".join([*keys, "policies", *columns]) + " |", "|" + "---|" * (len(keys) + 1 + len(columns))]
    for group, members in groups.items():
        means = [float(np.mean([float(m[c]) for m in members])) for c in columns]
        cells = [_fmt(value, key) for key, value in zip(keys, group, strict=True)]
        lines.append("| " + " | ".join([*cells, str(len(members)), *map(_fmt, means)]) + " |")
    return lines


def write_record(
    probes: Sequence[dict[str, Any]],
    units: Sequence[dict[str, Any]],
    freezes: Sequence[dict[str, Any]],
    out_dir: Path,
    command: str,
    condition: str,
    episodes: int,
) -> list[Path]:
    """Write ``probes.csv``, ``units.csv``, ``freeze.csv`` and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "probes.csv", out_dir / "units.csv", out_dir / "freeze.csv", out_dir / "report.md"]
    write_csv(files[0], probes, PROBE_FIELDS)
    write_csv(files[1], units, UNIT_FIELDS)
    write_csv(files[2], freezes, FREEZE_FIELDS)
    inactive = [u for u in units if u["frequency"] == 0.0]
    active = [u for u in units if u["frequency"] > 0.0]
    lines = [
        "# Why the RIM selection freezes: the probes",
        "",
        f"Written by `{command}`. Each policy played the first {episodes} levels of `{condition}` "
        "deterministically; its core was then replayed on those features and on transformed copies "
        "(`agents/analysis/selection_causes.py` says what each probe measures).",
        "",
        "## Selection on the policy's own features and on transformed copies (means over policies)",
        "",
        *_group_table(
            probes,
            ("learning_rate", "frames", "transform"),
            ("mean_return", "switch_rate", "min_frequency", "max_frequency", "margin", "first_step_sets"),
        ),
        "",
        "## The features (means over policies)",
        "",
        *_group_table(
            [p for p in probes if p["transform"] == "actual"],
            ("learning_rate", "frames"),
            ("consecutive_cosine", "common_share"),
        ),
        "",
        "## Gradient per unit",
        "",
        f"Units never active on these episodes: {len(inactive)} of {len(units)}; the largest gradient norm any of "
        f"them got: query {_fmt(max((u['query_grad'] for u in inactive), default=None))}, dynamics "
        f"{_fmt(max((u['dynamics_grad'] for u in inactive), default=None))}. Units active at some step: median "
        f"query {_fmt(float(np.median([u['query_grad'] for u in active])) if active else None)}, dynamics "
        f"{_fmt(float(np.median([u['dynamics_grad'] for u in active])) if active else None)}.",
        "",
        "## When the selection froze in training (rollout statistics)",
        "",
        "| learning_rate | seed | frozen from frame | first switch rate | final switch rate | updates |",
        "|---|---|---|---|---|---|",
        *[
            f"| {_fmt(r['learning_rate'], 'learning_rate')} | {r['seed']} | {_fmt(r['frames'])} | "
            f"{_fmt(r['first_switch'])} | {_fmt(r['final_switch'])} | {r['updates']} |"
            for r in freezes
        ],
        "",
    ]
    atomic_write_text(files[3], "\n".join(lines))
    return files
