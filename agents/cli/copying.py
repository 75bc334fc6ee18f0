"""``rims-copying`` / ``scripts/copying.py``: the RIMs paper's copying task, LSTM against RIMs, with CIs over seeds.

Usage::

    rims-copying                                   # lstm and rim, 3 seeds, width 120 (6 units of 20), 5,000 steps
    rims-copying --models lstm rim rim_residual --seeds 5 --steps 8000
    rims-copying --hidden 600 --dropout 0.5        # the paper's width and the authors' dropout (~75 CPU-min a run)
    rims-copying --first-seed 3 --seeds 2          # add seeds 3 and 4 to the committed table
    rims-copying --smoke                           # a tiny run end to end (tests)

Each (model, seed) trains in ``<root>/<model>/s<seed>/`` with a checkpoint at every periodic
evaluation, so running the same command again continues an interrupted table and reuses finished
runs; the summary goes to ``scripts/reproduce/copying/`` (``--smoke``: ``multirun/reproduce_smoke/copying/``).
The runs join the table already in ``--out`` (its per-seed record, :mod:`agents.analysis.reproduce.copying`):
its models and seeds stay, this call's are added, and every number, figure and verdict is recomputed; a
call with settings other than the table's is refused before training.
Exit status: 0 done, 2 invalid arguments or settings (or settings other than the committed table's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from agents.analysis.reproduce.copying import check_settings, load_record, merge
from agents.analysis.reproduce.copying_report import rewrite_verdicts, write_copying
from agents.analysis.reproduce.meta import meta, repo_relative, training_batches
from agents.analysis.reproduce.tables import REPO, RESULTS_DIR
from agents.experiment.copying import MODELS, CopySettings, train_run

ROOT = REPO / "multirun" / "reproduce" / "copying"
SMOKE_ROOT = REPO / "multirun" / "reproduce_smoke" / "copying"
SMOKE = CopySettings(
    steps=4, hidden_size=24, embed_size=12, batch_size=8, train_blank=5, test_blanks=(5, 20), test_size=16,
    curve_size=8, eval_every=2,
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    """The argument parser of ``rims-copying``."""
    default = CopySettings()
    parser = argparse.ArgumentParser(
        prog="rims-copying",
        description="Train nn.LSTM and RIMLSTM on the copying task (blank 50), test on blank 50 and 200.",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["lstm", "rim"], help="models to train")
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds per model to train, from --first-seed on (default: 3; smoke 1)"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="the first seed to train (default: 0); e.g. 3 adds seeds 3, 4, ..."
    )
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default: {default.steps})")
    parser.add_argument("--hidden", type=int, default=None, help=f"total width (default: {default.hidden_size})")
    parser.add_argument("--embed", type=int, default=None, help="embedding width (default: the width)")
    parser.add_argument("--units", type=int, default=None, help=f"RIM units (default: {default.num_units})")
    parser.add_argument("--k", type=int, default=None, help=f"active RIM units (default: {default.k})")
    parser.add_argument("--dropout", type=float, default=None, help="dropout (default: 0; the authors' code: 0.5)")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between periodic evaluations")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and budget, 1 seed; never committed")
    parser.add_argument("--root", type=Path, default=None, help="run folders (default: multirun/reproduce/copying)")
    parser.add_argument("--out", type=Path, default=None, help="summary folder (default: scripts/reproduce/copying)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--only-verdicts",
        action="store_true",
        help="no training: recompute the verdicts of the committed folder (--out) from its per-seed values",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default: 1, the suite's; more only on a quiet machine)"
    )
    return parser


def settings_from(args: argparse.Namespace) -> CopySettings:
    """The experiment's settings: the defaults (or the smoke sizes) with the given options."""
    base = SMOKE if args.smoke else CopySettings()
    hidden = args.hidden or base.hidden_size
    changes = {
        "steps": args.steps, "hidden_size": args.hidden, "embed_size": args.embed or (hidden if args.hidden else None),
        "num_units": args.units, "k": args.k, "dropout": args.dropout, "eval_every": args.eval_every,
    }  # fmt: skip
    return CopySettings(**{**base.__dict__, **{k: v for k, v in changes.items() if v is not None}})


def main(argv: list[str] | None = None) -> int:
    """Run ``rims-copying``; returns the exit status (0 done, 2 invalid arguments or settings)."""
    args = _parser().parse_args(argv)
    checks = (("--threads", args.threads, 1), ("--seeds", args.seeds, 1), ("--first-seed", args.first_seed, 0))
    for flag, value, low in checks:
        if value is not None and value < low:
            print(f"error: {flag} must be >= {low}, got {value}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    if args.only_verdicts:
        out = args.out or RESULTS_DIR / "copying"
        if not (out / "summary.json").is_file():
            print(f"error: --only-verdicts needs a copying folder with summary.json, got {out}", file=sys.stderr)
            return 2
        print(f"wrote {', '.join(p.name for p in rewrite_verdicts(out))} to {out}")
        return 0
    settings = settings_from(args)
    root = args.root or (SMOKE_ROOT if args.smoke else ROOT)
    out = args.out or (SMOKE_ROOT if args.smoke else RESULTS_DIR / "copying")
    if args.smoke and out.resolve().is_relative_to(RESULTS_DIR.resolve()):
        print(f"error: --smoke never writes into the committed results ({RESULTS_DIR})", file=sys.stderr)
        return 2
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or (1 if args.smoke else 3))))
    results = []
    try:
        check_settings(load_record(out).settings, settings.__dict__, out)  # refused before any training
        for name in args.models:
            for seed in seeds:
                folder = root / name / f"s{seed}"
                result = train_run(name, seed, settings, folder, not args.no_progress)
                results.append({**result, "source": repo_relative(folder)})
        record = load_record(out)  # again: another call may have added seeds while this one trained
        check_settings(record.settings, settings.__dict__, out)
        table = merge(record.results, results)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = None if argv is None else ["scripts/copying.py", *argv]
    batch = {"steps": settings.steps, "seeds": seeds, "models": list(args.models), "test_size": settings.test_size,
             "threads": args.threads}  # fmt: skip
    models = list(dict.fromkeys(r["model"] for r in table))
    budget = {**batch, "seeds": {m: [r["seed"] for r in table if r["model"] == m] for m in models}, "models": models}
    data = meta(budget, command, table="copying", batches=training_batches(record.meta, meta(batch, command)))
    files = write_copying(table, settings.__dict__, data, out)
    for name in models:
        model = [r for r in table if r["model"] == name]
        ce = {b: sum(r["final"][b]["ce"] for r in model) / len(model) for b in model[0]["final"]}
        shown = ", ".join(f"blank {b}: CE {v:.3f}" for b, v in ce.items())
        print(f"{name}: {len(model)} seeds, {shown}, {model[0]['seconds_per_step']:.3f} s/step")
    print(f"wrote {', '.join(p.name for p in files)} to {out}")
    return 0
