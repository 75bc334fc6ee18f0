"""A stateful language model written for nn.LSTM runs unchanged with the RIM classes.

The model and loop are ``scripts/stateful_lm.py`` (in the style of PyTorch's word-language-model
example: ``init_hidden``, ``repackage_hidden``, 35-token windows, hand-written SGD with gradient
clipping), trained here for two short epochs on a synthetic corpus.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "stateful_lm.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stateful_lm", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stateful_lm"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lm() -> ModuleType:
    return _load()


@pytest.mark.parametrize("model", ["lstm", "gru", "rim", "rim_gru"])
def test_stateful_lm_trains_with_manual_sgd(lm: ModuleType, model: str) -> None:
    results, ideal = lm.run([model], tokens=16_000, epochs=2, nhid=24, ninp=16, lr=5.0, order=1, seed=0)
    (result,) = results
    losses = [row["train_loss"] for row in result.epochs] + [row["valid_loss"] for row in result.epochs]
    assert all(math.isfinite(v) for v in losses)
    first, second = result.epochs
    assert second["train_loss"] < first["train_loss"]
    assert second["valid_loss"] < math.log(32) - 0.2  # better than uniform over the 32 tokens
    assert second["valid_loss"] > ideal  # and not better than the chain itself allows
    assert result.max_h <= 1.0


def test_repackage_hidden_detaches_every_tensor(lm: ModuleType) -> None:
    h = (torch.ones(2, 3, requires_grad=True) * 2, torch.ones(2, 3, requires_grad=True) * 3)
    out = lm.repackage_hidden(h)
    assert all(not t.requires_grad for t in out)
    assert lm.batchify(torch.arange(10), 3).shape == (3, 3)
