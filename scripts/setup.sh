#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its suite, dev, jax and docs extras. Idempotent:
# reinstalls only when pyproject.toml changed. torch is installed first and pinned (TORCH_SPEC) so that no
# dependency pulls a multi-GB CUDA build; on this machine type torch==2.13.0 is a local CPU wheel.
# TORCH_INDEX_URL picks the index torch comes from (PyTorch's CPU-only or CUDA wheels, see docs/install.md),
# e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
torch_index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  torch_index=(--index-url "$TORCH_INDEX_URL")
fi
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${torch_index[@]}" "$torch_spec"
  .venv/bin/python -m pip install -q -e ".[suite,dev,jax,docs]"
  touch "$stamp"
fi
