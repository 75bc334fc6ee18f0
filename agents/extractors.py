"""Features extractor for MiniGrid's symbolic image observation."""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class MiniGridCNN(BaseFeaturesExtractor):
    """Small CNN for the 7x7x3 symbolic view (object, colour, state codes), any image >= 4x4.

    Three 2x2 convolutions with a 2x2 max-pool after the first (as in rl-starter-files);
    SB3's NatureCNN needs at least 36x36 pixels. Inputs are category codes, not pixels: the
    policy must not divide them by 255 (``normalize_images=False``).

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
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, *shape)).shape[1]
        self.head = nn.Identity() if flat == features_dim else nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, features_dim)``.

        The input is made contiguous first: SB3's ``VecTransposeImage`` hands in transposed
        views and a resumed checkpoint a contiguous copy, and convolutions on the two memory
        layouts round differently; one layout keeps results independent of where obs came from.
        """
        return self.head(self.cnn(observations.float().contiguous()))
