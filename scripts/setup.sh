#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its suite, dev and jax extras. Idempotent: reinstalls
# only when pyproject.toml changed. torch is installed first and pinned (TORCH_SPEC) so that no
# dependency pulls a multi-GB CUDA build; on this machine type torch==2.13.0 is a local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$torch_spec"
  .venv/bin/python -m pip install -q -e ".[suite,dev,jax]"
  touch "$stamp"
fi
