"""Play trained policies under every way of acting: actions greedy or sampled, selection noise off or on.

    python scripts/acting_modes.py --runs 'multirun/reproduce/doorkey/lstm/*' 'multirun/reproduce/doorkey/rim/*' \
        'multirun/reproduce/modularity/*/*'

writes ``scripts/reproduce/acting_modes/`` (``acting_modes.csv``, one row per run and mode, and ``report.md``). Each
policy plays the first ``--episodes`` levels of ``--condition`` (default: the split's validation levels, never a
test condition) in each mode of ``agents/analysis/acting_modes.py``. Runs already in the record are kept and not
played again (``--replay`` plays them again), so an interrupted call resumes; a folder without ``model.zip`` is
skipped with a warning.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shlex
import sys
from pathlib import Path

import torch

from agents.analysis.acting_modes import FIELDS, play_modes, render_report
from agents.experiment.atomic import atomic_write_text, write_csv
from agents.experiment.run_folder import MODEL_FILE, load_run, matching_folders, run_label

REPO = Path(__file__).resolve().parents[1]
RECORD = "acting_modes.csv"
log = logging.getLogger("acting_modes")


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("mean_return", "mean_success", "switch_rate", "min_frequency", "max_frequency"):
            row[key] = None if row[key] in ("", None) else float(row[key])
        row["seed"], row["episodes"] = int(row["seed"]), int(row["episodes"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="glob patterns of trained run folders")
    parser.add_argument("--condition", default="validation", help="the condition the policies play")
    parser.add_argument("--episodes", type=int, default=100, help="levels played per policy and mode")
    parser.add_argument("--replay", action="store_true", help="play runs already in the record again")
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "reproduce" / "acting_modes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    folders = matching_folders(args.runs)
    if not folders:
        parser.error(f"no run folders match {args.runs}")
    rows = [] if args.replay else _read(args.out / RECORD)
    other = {(r["condition"], r["episodes"]) for r in rows} - {(args.condition, args.episodes)}
    if other:
        parser.error(
            f"{args.out / RECORD} holds runs played on {sorted(other)} (condition, episodes), not "
            f"({args.condition!r}, {args.episodes}): pass --replay to start it again, or another --out"
        )
    command = "python scripts/acting_modes.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    for folder in folders:
        name = run_label(folder)
        if not (folder / MODEL_FILE).is_file():
            log.warning("skipping %s: no %s (not finished)", folder, MODEL_FILE)
            continue
        if any(r["run"] == name for r in rows):
            continue
        model, split, cfg = load_run(folder)
        log.info("playing %s", name)
        played = play_modes(model, split.condition(args.condition), args.episodes)
        label = {"run": name, "model": str(cfg.model.get("name") or cfg.model.core), "seed": int(cfg.seed),
                 "condition": args.condition}  # fmt: skip
        rows += [{**label, **r} for r in played]
        _write(args.out, rows, command, args.condition, args.episodes)  # after each run: an interrupted call resumes
    if rows:
        _write(args.out, rows, command, args.condition, args.episodes)
        log.info("wrote %s", args.out)
    return 0


def _write(out: Path, rows: list[dict], command: str, condition: str, episodes: int) -> None:
    """The record and its report (the report names this call's command)."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / RECORD, rows, FIELDS)
    atomic_write_text(out / "report.md", render_report(rows, command, condition, episodes))


if __name__ == "__main__":
    sys.exit(main())
