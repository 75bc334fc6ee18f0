"""``meta.json`` of a committed result: commit, date, machine, budget and the exact command."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from agents.experiment.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[3]  # agents/analysis/reproduce/ -> the checkout


def _git(*args: str) -> str:
    """Output of a git command in the repository, or ``""`` if git is unavailable."""
    try:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it, else as given (committed files stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else :func:`platform.processor`."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, cores, OS, Python and torch versions, and the torch threads of this process."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: ``python <script> <args>`` with shell quoting (default: ``sys.argv``)."""
    args = list(sys.argv if argv is None else argv)
    shown = repo_relative(args[0]) if args else ""
    return " ".join(["python", shlex.quote(shown), *map(shlex.quote, args[1:])])


def meta(budget: dict[str, Any], argv: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Everything ``meta.json`` records.

    :param budget: frames, seeds, episodes and the like of the table.
    :param argv: the command (default: ``sys.argv``).
    :param extra: further entries (e.g. the sweeps' command lines).
    """
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "budget": budget,
        "command": command_line(argv),
        **extra,
    }


def write_meta(data: dict[str, Any], out_dir: Path) -> Path:
    """Write ``meta.json`` into ``out_dir`` (atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "meta.json"
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def training_batches(previous: dict[str, Any], batch: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The training batches of a table: the previous ``meta.json``'s (itself, for one written before batches were
    recorded) and this call's, if it trained or harvested runs (``None``: it did not)."""
    if previous.get("batches") is not None:
        batches = list(previous["batches"])
    elif previous:
        keys = ("commit", "date", "machine", "budget", "command", "sweeps", "cost")
        batches = [{key: previous[key] for key in keys if key in previous}]
    else:
        batches = []
    return [*batches, batch] if batch is not None else batches


def meta_lines(data: dict[str, Any]) -> str:
    """A Markdown paragraph of :func:`meta` for a report."""
    m = data["machine"]
    dirty = " (with uncommitted changes)" if data["dirty"] else ""
    text = (
        f"Commit `{data['commit'][:12] or 'unknown'}`{dirty}, {data['date']}; {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']}, Python {m['python']}.\n\nCommand: `{data['command']}`"
    )
    cost = data.get("cost")
    if cost:
        text += f"\n\nCost: {_cost_text(cost)}."
    for number, batch in enumerate(data.get("batches") or [], start=1):
        machine_ = batch.get("machine", {})
        seeds = batch.get("budget", {}).get("seeds")
        seeds_text = (
            "; ".join(f"{m} {v}" for m, v in seeds.items()) if isinstance(seeds, dict) else f"every model {seeds}"
        )
        text += (
            f"\n\nTraining batch {number}: commit `{str(batch.get('commit', ''))[:12] or 'unknown'}`, "
            f"{batch.get('date', '?')}, {machine_.get('cpu', '?')}; seeds {seeds_text}"
        )
        text += f"; cost {_cost_text(batch['cost'])}." if batch.get("cost") else "."
    return text


def _cost_text(cost: dict[str, Any]) -> str:
    """``12.5 training minutes (lstm 3, rim 9.5), about 6.3 minutes of wall time at 2 runs at once (...)``."""
    models = ", ".join(f"{model} {minutes:g}" for model, minutes in cost["training_minutes"].items())
    return (
        f"{cost['total_minutes']:g} training minutes ({models}), about {cost['wall_minutes']:g} minutes of wall time "
        f"at {cost['jobs']} runs at once (SB3's time_elapsed of each run, one torch thread per run; final "
        "evaluations not included)"
    )
