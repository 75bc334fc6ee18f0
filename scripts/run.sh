#!/usr/bin/env bash
# Set up the environment if needed, then run a Python script of the project in it, e.g.
#   scripts/run.sh scripts/learn_check.py --only ppo-rim --seeds 0
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export OMP_NUM_THREADS=1
exec .venv/bin/python "$@"
