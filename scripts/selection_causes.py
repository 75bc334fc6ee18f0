"""Why the RIM selection freezes: probe untrained and trained policies, and read when training froze it.

The probes are those of ``agents/analysis/selection_causes.py``; the freeze point of a training run comes from its
rollout selection statistics (issue 26, item 1).

    python scripts/selection_causes.py --untrained 5 \
        --runs 'multirun/reproduce/tune/rim/*' 'multirun/reproduce/doorkey/rim/*' \
        --freeze 'multirun/reproduce/doorkey/rim/*' 'multirun/selection_freeze/*/*'

writes ``scripts/reproduce/selection_causes/`` (``probes.csv``, ``units.csv``, ``freeze.csv``, ``report.md``).
Every policy plays the first ``--episodes`` levels of ``--condition`` (default: the split's validation levels,
never a test condition). A folder without ``model.zip`` (unfinished) is skipped with a warning.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from agents.analysis.selection_causes_report import Policy, freeze_rows, probe, write_record
from agents.experiment.config import typed_config
from agents.experiment.config.describe import CONFIG_DIR
from agents.experiment.run import build_model, validate
from agents.experiment.run_folder import MODEL_FILE, load_run, load_run_config, matching_folders, run_label
from envs.levels import make_condition_vec_env

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("selection_causes")


def untrained(seed: int, split: str, model: str, learning_rate: float) -> Policy:
    """A freshly initialised agent of the train config (``env=<split> model=<model> seed=<seed>``)."""
    overrides = [f"env={split}", f"model={model}", f"seed={seed}", f"agent.learning_rate={learning_rate}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = typed_config(compose(config_name="train", overrides=overrides))
    found = validate(cfg)
    env = make_condition_vec_env(found.train, cfg.n_envs, seed=cfg.seed)
    return Policy(f"untrained/{seed}", build_model(cfg, env), found, learning_rate, 0, seed)


def trained(folder: Path) -> Policy:
    """The agent of a finished run folder."""
    model, split, cfg = load_run(folder)
    return Policy(run_label(folder), model, split, float(cfg.agent.learning_rate), int(cfg.total_frames), int(cfg.seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=[], help="glob patterns of trained run folders to probe")
    parser.add_argument(
        "--freeze",
        nargs="*",
        default=[],
        help="glob patterns of run folders whose rollout selection statistics say when the selection froze",
    )
    parser.add_argument("--untrained", type=int, default=0, help="probe this many untrained policies (seeds 0..N-1)")
    parser.add_argument("--split", default="doorkey", help="split of the untrained policies")
    parser.add_argument("--model", default="rim", help="model preset of the untrained policies")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="recorded for the untrained policies")
    parser.add_argument("--condition", default="validation", help="the condition the policies play")
    parser.add_argument("--episodes", type=int, default=20, help="levels played per policy")
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "reproduce" / "selection_causes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.episodes < 1 or args.untrained < 0:
        parser.error(f"--episodes must be >= 1 and --untrained >= 0, got {args.episodes} and {args.untrained}")
    policies = [untrained(seed, args.split, args.model, args.learning_rate) for seed in range(args.untrained)]
    for folder in matching_folders(args.runs):
        if not (folder / MODEL_FILE).is_file():
            log.warning("skipping %s: no %s (not finished)", folder, MODEL_FILE)
            continue
        policies.append(trained(folder))
    if not policies:
        parser.error("nothing to probe: give --untrained N or --runs with finished run folders")
    probes, units = [], []
    for policy in policies:
        log.info("probing %s", policy.name)
        rows, unit_rows = probe(policy, args.condition, args.episodes)
        probes += rows
        units += unit_rows
    freeze_runs = []
    for folder in matching_folders(args.freeze):
        if (folder / "metrics.csv").is_file() and (folder / MODEL_FILE).is_file():
            cfg = load_run_config(folder)
            freeze_runs.append((folder, run_label(folder), float(cfg.agent.learning_rate), int(cfg.seed)))
    command = "python scripts/selection_causes.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    files = write_record(probes, units, freeze_rows(freeze_runs), args.out, command, args.condition, args.episodes)
    for path in files:
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
