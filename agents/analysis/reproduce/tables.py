"""The MiniGrid tables of the reproduction: their presets, and one ``scripts/train.py`` sweep per model.

A table's settings live in ``configs/sweep/reproduce_<table>.yaml``, a Hydra sweep preset that also
runs by hand. :func:`load_preset` reads it as data and :func:`sweep_overrides` turns it into the
command line of one model's sweep, always in the same order and into the same folder
(``multirun/reproduce/<table>/<model>/``), with ``resume=true``: running the same command again
continues unfinished jobs and returns finished ones at once (their job folders are named after
``hydra.job.num``, so the order of the swept values must never change).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from envs.splits import load_split

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]  # agents/analysis/reproduce/ -> the checkout
PRESET_DIR = REPO / "configs" / "sweep"
RESULTS_DIR = REPO / "scripts" / "reproduce"
SWEEP_ROOT = Path("multirun/reproduce")  # relative to the repository
SMOKE_ROOT = Path("multirun/reproduce_smoke")
TUNE = "tune"
COPYING = "copying"
KNOBS = "knobs"
MODULARITY_TUNE = "modularity_tune"  # stage 1 of issue 26: each remedy family's coefficient, on validation levels
MODULARITY = "modularity"  # stage 2: the chosen remedies on the doorkey setting (stage 3 adds seeds)
MODULARITY_MULTIROOM = "modularity_multiroom"  # stage 3: the remedy stage 2 chose, on the multiroom setting
MODULARITY_TABLES = (MODULARITY, MODULARITY_MULTIROOM)  # split tables whose models come from an earlier choice
SPLIT_TABLES = ("empty", "doorkey", "multiroom", "crossing", "lava", "fourrooms", KNOBS, *MODULARITY_TABLES)
TABLES = (TUNE, MODULARITY_TUNE, *SPLIT_TABLES, COPYING)
MODELS = ("lstm", "gru", "rim", "rim_u6k4")
KNOB_MODELS = ("rim_dropout", "rim_input_score", "rim_k2")
# The remedies against a frozen selection (rims/remedies.py), one family each, its candidate presets
# (configs/model/<name>.yaml) in grid order: the smaller coefficient first.
REMEDY_FAMILIES = {
    "noise": ("rim_noise_s1", "rim_noise_s3"),
    "bias": ("rim_bias_r1e3", "rim_bias_r1e2"),
    "loss": ("rim_loss_a001", "rim_loss_a01"),
    "init_learned": ("rim_init_learned",),
    "init_random": ("rim_init_random_s01", "rim_init_random_s05"),
}
REMEDY_MODELS = tuple(model for family in REMEDY_FAMILIES.values() for model in family)
# per family, the model key that sets its coefficient (init_learned has none: its key says "learned")
REMEDY_KEYS = {"noise": "selection_noise", "bias": "balance_rate", "loss": "balance_loss",
               "init_learned": "initial_state", "init_random": "initial_state_std"}  # fmt: skip
FIXED_SELECTION = "rim"  # the model every remedy is also compared with: the plain RIM, whose selection froze
# a table's models when not MODELS (the modularity tables': lstm, rim and the remedies an earlier table chose)
TABLE_MODELS = {KNOBS: ("lstm", "rim", "rim_u6k4", *KNOB_MODELS), MODULARITY_TUNE: REMEDY_MODELS}
# runs a table takes from another table's sweep folders (same split, budget and evaluation)
SHARED_SWEEPS = {
    KNOBS: {"lstm": "doorkey", "rim": "doorkey", "rim_u6k4": "doorkey"},
    MODULARITY: {"lstm": "doorkey", FIXED_SELECTION: "doorkey"},
    MODULARITY_MULTIROOM: {"lstm": "multiroom", FIXED_SELECTION: "multiroom"},
}
TUNED_AS = dict.fromkeys((*KNOB_MODELS, *REMEDY_MODELS), "rim")  # models that take another model's tuned rate
ALL_MODELS = (*MODELS, *KNOB_MODELS, *REMEDY_MODELS)
SMOKE_MODELS = ("lstm", "rim")
SMOKE_SETTINGS = {"total_frames": 2048, "eval.every_frames": 2048, "eval.episodes": 1, "eval.final_episodes": 1}
SMOKE_LEARNING_RATES = (0.0003, 0.001)
LAUNCHERS = {"joblib": "hydra/launcher=joblib", "slurm": "hydra/launcher=slurm", "local": "hydra/launcher=local"}
LEARNING_RATE = "agent.learning_rate"


class ReproduceError(ValueError):
    """A table that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Preset:
    """A table's sweep preset as data.

    :param table: the table name.
    :param env: the split (``env`` group choice).
    :param groups: other config-group choices, e.g. ``[("logger", "none")]``.
    :param settings: ``(dotted key, value)`` of the preset's body, in file order.
    :param params: ``(dotted key, values)`` swept by the preset, in file order.
    """

    table: str
    env: str
    groups: list[tuple[str, str]]
    settings: list[tuple[str, Any]]
    params: list[tuple[str, list[Any]]]

    def setting(self, key: str, default: Any = None) -> Any:
        """The value of a dotted key of the body."""
        return dict(self.settings).get(key, default)

    def param(self, key: str) -> list[Any] | None:
        """The swept values of a key, or None."""
        return dict(self.params).get(key)


def _flatten(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, leaf)`` pairs of a nested mapping, in order (lists are leaves)."""
    pairs: list[tuple[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, dict):
            pairs += _flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _sweep_values(text: Any) -> list[Any]:
    """The values of a Hydra sweep: ``range(a[, b])`` or ``a,b,c`` (numbers parsed)."""
    text = str(text).strip()
    if match := re.fullmatch(r"range\((\d+)(?:,\s*(\d+))?\)", text):
        start, stop = (0, int(match[1])) if match[2] is None else (int(match[1]), int(match[2]))
        return list(range(start, stop))
    return [yaml.safe_load(part) for part in text.split(",")]


def load_preset(table: str, directory: Path = PRESET_DIR) -> Preset:
    """Read ``configs/sweep/reproduce_<table>.yaml``.

    :raises ReproduceError: no such preset, or one without an ``override /env`` default.
    """
    path = directory / f"reproduce_{table}.yaml"
    if not path.is_file():
        raise ReproduceError(f"no preset {path} for table {table!r}")
    data = yaml.safe_load(path.read_text()) or {}
    groups = []
    for entry in data.get("defaults", []):
        for key, value in entry.items() if isinstance(entry, dict) else []:
            groups.append((key.removeprefix("override").strip().lstrip("/"), str(value)))
    env = dict(groups).get("env")
    if env is None:
        raise ReproduceError(f"{path} has no 'override /env: <split>' default")
    params = data.get("hydra", {}).get("sweeper", {}).get("params", {})
    body = {k: v for k, v in data.items() if k not in ("defaults", "hydra")}
    return Preset(
        table=table,
        env=env,
        groups=[(g, v) for g, v in groups if g != "env"],
        settings=_flatten(body),
        params=[(key, _sweep_values(value)) for key, value in params.items()],
    )


def smoke_conditions(split: str) -> tuple[str, ...]:
    """The conditions a smoke run evaluates: the split's first two and last two (iid, an OOD one, perturbed ones).

    An untrained policy plays every episode to its time limit, so evaluating all conditions (2,560 steps
    on DoorKey-16x16) would dominate a smoke run.
    """
    names = list(load_split(split).test)
    return tuple(dict.fromkeys([*names[:2], *names[-2:]]))


def format_value(value: Any) -> str:
    """``value`` in Hydra's override syntax (``true``, ``null``, ``[iid]``, ``0.0003``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class Plan:
    """How one table runs this time.

    :param preset: the table's preset.
    :param models: model presets (``configs/model/<name>.yaml``) to run.
    :param seeds: training seeds.
    :param frames: training frames per run.
    :param learning_rates: per model the learning rate (tables), or None to sweep the preset's grid (tune).
    :param jobs: parallel jobs of the launcher.
    :param launcher: a key of :data:`LAUNCHERS`.
    :param sweep_root: the folder holding ``<table>/<model>/`` sweep folders (relative: to the repository).
    :param settings: body settings replacing the preset's (the smoke budget).
    :param extra: further overrides appended to every sweep's command line.
    :param compared: the table's own models, compared beside ``models`` when the record holds them (so that a call
        that runs some models, e.g. ``--models X --first-seed 5``, still reports the whole table).
    """

    preset: Preset
    models: tuple[str, ...]
    seeds: list[int]
    frames: int
    learning_rates: dict[str, float] | None
    jobs: int = 2
    launcher: str = "joblib"
    sweep_root: Path = SWEEP_ROOT
    settings: dict[str, Any] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    compared: tuple[str, ...] = ()

    @property
    def reported(self) -> tuple[str, ...]:
        """The models a split table's report compares: :attr:`compared`, then the others of :attr:`models`."""
        return tuple(dict.fromkeys([*self.compared, *self.models]))

    def sweep_dir(self, model: str) -> Path:
        """``<sweep_root>/<table>/<model>`` as given to Hydra (relative: to the repository); for a
        model whose runs the table shares (:data:`SHARED_SWEEPS`), the other table's folder."""
        table = SHARED_SWEEPS.get(self.preset.table, {}).get(model, self.preset.table)
        return self.sweep_root / table / model

    def sweep_path(self, model: str) -> Path:
        """The sweep folder of one model as an absolute path."""
        return REPO / self.sweep_dir(model)

    def swept(self, model: str) -> list[tuple[str, list[Any]]]:
        """The swept keys and values of one model's sweep, in command-line order."""
        out = []
        for key, values in self.preset.params:
            if key == "seed":
                values = self.seeds
            elif key == LEARNING_RATE and self.learning_rates is not None:
                continue
            out.append((key, list(values)))
        if self.learning_rates is not None:
            out.insert(0, (LEARNING_RATE, [self.learning_rates[model]]))
        return out

    def jobs_of(self, model: str) -> list[dict[str, Any]]:
        """The settings of each job of one model's sweep, in ``hydra.job.num`` order."""
        swept = self.swept(model)
        keys = [key for key, _ in swept]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in swept))]


def sweep_overrides(plan: Plan, model: str, n_jobs: int | None = None) -> list[str]:
    """The ``scripts/train.py -m`` arguments of one model's sweep.

    :param n_jobs: the joblib launcher's parallel jobs (default: ``plan.jobs``, at most the sweep's jobs).

    Order: ``env``, ``model``, the swept keys (a tuned learning rate first), the preset's body,
    its other group choices, ``progress_bar=false resume=true``, the launcher, the sweep folder,
    then ``plan.extra``. For ``tune`` this is, word for word, the command the tune sweeps were
    started with by hand (issue 13).
    """
    values = {**dict(plan.preset.settings), **plan.settings, "total_frames": plan.frames}
    body = list(dict.fromkeys(["total_frames", *dict(plan.preset.settings), *plan.settings]))
    args = [f"env={plan.preset.env}", f"model={model}"]
    args += [f"{key}={','.join(format_value(v) for v in values)}" for key, values in plan.swept(model)]
    args += [f"{key}={format_value(values[key])}" for key in body]
    args += [f"{group}={value}" for group, value in plan.preset.groups]
    args += ["progress_bar=false", "resume=true", LAUNCHERS[plan.launcher]]
    if plan.launcher == "joblib":
        args.append(f"hydra.launcher.n_jobs={min(n_jobs or plan.jobs, len(plan.jobs_of(model)))}")
    args.append(f"hydra.sweep.dir={plan.sweep_dir(model)}")
    return [*args, *plan.extra]


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    """``config[a][b]`` for ``"a.b"``, or None."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def check_sweep_dir(plan: Plan, model: str) -> None:
    """Refuse early when a job folder of the sweep holds a run that this plan's job of that number cannot resume.

    A job folder is named by its job number and its seed, so a folder holding a seed that this plan does not
    train (seeds 0-4 beside a call adding seeds 5-9, ``--first-seed 5``) is another seed's run of the table: only
    its frame budget has to match.

    :raises ReproduceError: naming the folder, the key, what it holds and what this plan asks for.
    """
    directory = plan.sweep_path(model)
    if not directory.is_dir():
        return
    jobs = plan.jobs_of(model)
    planned_seeds = {job.get("seed") for job in jobs}
    for job_dir in sorted(p for p in directory.iterdir() if (p / "config.yaml").is_file()):
        number = job_dir.name.split("_", 1)[0]
        if not number.isdigit() or int(number) >= len(jobs):
            continue
        config = yaml.safe_load((job_dir / "config.yaml").read_text()) or {}
        other_seed = "seed" in jobs[int(number)] and _lookup(config, "seed") not in planned_seeds
        wanted = {"total_frames": plan.frames, **({} if other_seed else jobs[int(number)])}
        for key, value in wanted.items():
            held = _lookup(config, key)
            if held != value:
                raise ReproduceError(
                    f"{job_dir} holds a run with {key}={held!r}, but job {number} of this command has "
                    f"{key}={value!r}: rerun with the settings it was started with (e.g. --frames, --seeds), "
                    f"or move {directory} away to start the table afresh"
                )


def launch(plan: Plan, model: str, n_jobs: int | None = None) -> int:
    """Run one model's sweep (``scripts/train.py -m``, one torch thread per job) and wait for it.

    :param n_jobs: as in :func:`sweep_overrides`.
    :returns: the sweep's exit status (non-zero if any job failed).
    :raises ReproduceError: see :func:`check_sweep_dir`.
    """
    check_sweep_dir(plan, model)
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "-m", *sweep_overrides(plan, model, n_jobs)]
    log.info("sweep %s/%s: %s", plan.preset.table, model, " ".join(command[1:]))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=environment, check=False).returncode


def sweep_folders(plan: Plan) -> dict[str, Path]:
    """``{model: its sweep folder}`` (absolute) for the plan's models."""
    return {model: plan.sweep_path(model) for model in plan.models}


def table_models(table: str, smoke: bool = False) -> tuple[str, ...]:
    """The models a table runs by default (``smoke``: its first and last, or :data:`SMOKE_MODELS`)."""
    if table in TABLE_MODELS:
        models = TABLE_MODELS[table]
        return (models[0], models[-1]) if smoke else models
    return SMOKE_MODELS if smoke else MODELS


def learning_rates_for(models: Sequence[str], choice: dict[str, float], source: Path) -> dict[str, float]:
    """The tuned learning rate of every model (a knob variant takes its base model's, :data:`TUNED_AS`).

    :raises ReproduceError: a model without a tuned rate.
    """
    missing = [m for m in models if TUNED_AS.get(m, m) not in choice]
    if missing:
        raise ReproduceError(
            f"{source} has no tuned learning rate for {missing} (it has {sorted(choice)}); "
            f"run `python scripts/reproduce.py tune` for them first"
        )
    return {m: float(choice[TUNED_AS.get(m, m)]) for m in models}


def family_of(model: str) -> str:
    """The remedy family of a candidate preset (:data:`REMEDY_FAMILIES`).

    :raises ReproduceError: a model that is no remedy candidate.
    """
    for family, candidates in REMEDY_FAMILIES.items():
        if model in candidates:
            return family
    raise ReproduceError(f"{model!r} is no remedy candidate; the candidates: {list(REMEDY_MODELS)}")
