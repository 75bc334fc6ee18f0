"""Shared pytest set-up: one torch thread (small nets on 2 vCPUs), deterministic seeds, and a cheaper
XLA compile for the JAX tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

# The JAX tests spend most of their time in XLA compiling small traced scans; their checks hold at
# tolerances that need none of XLA's backend optimisation, which costs more than it saves here (the
# three JAX test files: 130 s -> 76 s of compile on one core). Compiled programs are kept per machine,
# like the C++ loops' build (warm: 28 s); set before JAX is imported, and a user's own settings win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "rims" / "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
