"""Features extractor for MiniGrid's symbolic image observation."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

POOL_MIN_SIZE = 7  # images at least this large (both sides) get the max-pool after the first convolution


def conv2x2(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv`` (kernel 2, stride 1, no padding) on a channels-last batch, as one matrix product.

    One ``index_select`` gathers every 2x2 patch in the weight's ``(C, 2, 2)`` order
    (:func:`_patch_index`), so one ``addmm`` with the weight as an ``(O, 4C)`` matrix replaces
    the convolution. On this model's tiny images that is faster on CPU than ``torch.conv2d``,
    whose per-call set-up dominates, and than stacking four shifted views (fewer calls forward,
    a scatter-add instead of four padded copies backward; ``scripts/bench_agents.py`` measures
    the effect on training).

    :param x: ``(N, H, W, C)`` channels-last input.
    :param conv: holds the weight ``(O, C, 2, 2)`` and bias ``(O,)``.
    :returns: ``(N, H - 1, W - 1, O)``.
    """
    n, height, width, channels = x.shape
    index = _patch_index(height, width, channels, x.device)
    rows = x.reshape(n, height * width * channels).index_select(1, index).view(-1, 4 * channels)
    kernel = conv.weight.reshape(conv.out_channels, 4 * channels).t()
    out = rows @ kernel if conv.bias is None else torch.addmm(conv.bias, rows, kernel)
    return out.view(n, height - 1, width - 1, conv.out_channels)


@functools.lru_cache(maxsize=64)
def _patch_index(height: int, width: int, channels: int, device: torch.device) -> Tensor:
    """Positions in a flattened ``(H, W, C)`` image of every 2x2 patch's entries: patch ``(i, j)``
    (row-major over ``(H-1, W-1)``) lists ``x[i + a, j + b, c]`` in ``(c, a, b)`` order, the
    order of a ``(C, 2, 2)`` kernel. Shape ``((H-1) * (W-1) * 4C,)``."""
    i = torch.arange(height - 1, device=device).view(-1, 1, 1, 1, 1)
    j = torch.arange(width - 1, device=device).view(1, -1, 1, 1, 1)
    c = torch.arange(channels, device=device).view(1, 1, -1, 1, 1)
    a = torch.arange(2, device=device).view(1, 1, 1, -1, 1)
    b = torch.arange(2, device=device).view(1, 1, 1, 1, -1)
    return (((i + a) * width + (j + b)) * channels + c).reshape(-1)


class MiniGridCNN(BaseFeaturesExtractor):
    """Small CNN for the 7x7x3 symbolic view (object, colour, state codes), any image >= 4x4.

    Three 2x2 convolutions with a 2x2 max-pool after the first (as in rl-starter-files; images
    smaller than 7x7 skip the pool); SB3's NatureCNN needs at least 36x36 pixels. Inputs are
    category codes, not pixels: the policy must not divide them by 255
    (``normalize_images=False``). The convolutions run as matrix products on channels-last
    data (:func:`conv2x2`); the parameters are ordinary ``nn.Conv2d`` ones.

    :param observation_space: channel-first ``(C, H, W)`` image box (SB3 transposes
        MiniGrid's channel-last images before the policy sees them).
    :param features_dim: output size; a linear layer maps the conv output to it if they differ.
    :raises ValueError: if the image is smaller than 4x4 or not 3-D.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 64) -> None:
        shape = observation_space.shape
        if len(shape) != 3:
            raise ValueError(f"MiniGridCNN expects a (C, H, W) image observation, got shape {shape}")
        channels, height, width = shape
        if height < 4 or width < 4:
            raise ValueError(f"MiniGridCNN needs an image of at least 4x4, got {height}x{width} (shape {shape})")
        super().__init__(observation_space, features_dim)
        self.pool = min(height, width) >= POOL_MIN_SIZE
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 2),
            nn.ReLU(),
            nn.MaxPool2d(2) if self.pool else nn.Identity(),
            nn.Conv2d(16, 32, 2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self._convolutions(torch.zeros(1, *shape)).shape[1]
        self.head = nn.Identity() if flat == features_dim else nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())

    def _convolutions(self, observations: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, 64 * H' * W')``, flattened in ``nn.Flatten``'s (C, H, W) order."""
        x = observations.to(self.cnn[0].weight.dtype).permute(0, 2, 3, 1)
        x = F.relu(conv2x2(x, self.cnn[0]))
        if self.pool:
            x = F.max_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        x = F.relu(conv2x2(x, self.cnn[3]))
        x = F.relu(conv2x2(x, self.cnn[5]))
        return x.permute(0, 3, 1, 2).flatten(1)

    def forward(self, observations: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, features_dim)``.

        The same observations give the same features whatever their memory layout (SB3's
        ``VecTransposeImage`` hands in transposed views, a resumed checkpoint a contiguous copy).
        """
        return self.head(self._convolutions(observations))
