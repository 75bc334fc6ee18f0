"""agents.extractors: the matrix-product CNN computes what its nn.Conv2d layers define."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces

from agents.extractors import MiniGridCNN, conv2x2


def _space(height: int, width: int, channels: int = 3) -> spaces.Box:
    return spaces.Box(0, 255, (channels, height, width), np.uint8)


@pytest.mark.parametrize("bias", [True, False])
def test_conv2x2_is_a_2x2_convolution(bias: bool) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 7, 2, bias=bias).double()
    x = torch.randn(3, 5, 6, 4, dtype=torch.float64)
    got = conv2x2(x.permute(0, 2, 3, 1), conv).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, F.conv2d(x, conv.weight, conv.bias), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [(7, 7), (9, 9), (11, 8), (6, 6), (5, 5), (4, 4), (7, 5)])
def test_same_features_and_gradients_as_the_layers(size: tuple[int, int]) -> None:
    """The forward equals ``head(cnn(x))`` through the nn layers (pool only from 7x7 up)."""
    torch.manual_seed(1)
    model = MiniGridCNN(_space(*size)).double()
    x = torch.randint(0, 11, (6, 3, *size)).double()
    expected = model.head(model.cnn(x))
    got = model(x)
    assert got.shape == (6, 64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), list(model.parameters()))
    expected_grads = torch.autograd.grad((expected * weights).sum(), list(model.parameters()))
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_memory_layout_does_not_change_features() -> None:
    """SB3 hands in transposed views during rollouts and contiguous copies after a resume."""
    model = MiniGridCNN(_space(7, 7))
    channels_last = torch.randint(0, 11, (16, 7, 7, 3)).float()
    view = channels_last.permute(0, 3, 1, 2)
    assert torch.equal(model(view), model(view.contiguous()))


def test_pool_only_from_7x7() -> None:
    assert MiniGridCNN(_space(7, 7)).pool and not MiniGridCNN(_space(6, 9)).pool
    with pytest.raises(ValueError, match=r"at least 4x4, got 3x5"):
        MiniGridCNN(_space(3, 5))
