#!/usr/bin/env bash
# Set up the environment if needed, then run the fast test suite on every CPU (pytest-xdist; extra
# args go to pytest, e.g. `scripts/test.sh -m slow` for the longer checks, `-n 0` for one process;
# RIMS_TEST_WORKERS sets the number of workers).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export OMP_NUM_THREADS=1
exec .venv/bin/python -m pytest -n "${RIMS_TEST_WORKERS:-logical}" "$@"
