"""Shared pytest set-up: one torch thread (small nets on 2 vCPUs), deterministic seeds."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
