"""Compare finished runs: ``python scripts/compare.py PATH [PATH ...] [--out DIR] [--reps N] [--wandb MODE]``."""

from agents.cli.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
