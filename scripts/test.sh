#!/usr/bin/env bash
# Set up the environment if needed, then run the fast test suite (extra args go to pytest,
# e.g. `scripts/test.sh -m slow` for the longer learning checks).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export OMP_NUM_THREADS=1
exec .venv/bin/python -m pytest "$@"
