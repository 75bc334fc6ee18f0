"""Evaluate trained runs on every test condition of their split; see agents/cli/evaluate.py.

python scripts/evaluate.py runs/<date>/<run> [more runs] --episodes 100 --out runs/eval
python scripts/evaluate.py model.zip --split doorkey --algo ppo
"""

import sys

from agents.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
