"""A tiny memory task: a cue shown only in the first observation decides the last action.

A feed-forward policy cannot beat an expected return of 0.5; a recurrent one can reach 1.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueMemoryEnv(gym.Env[np.ndarray, int]):
    """Episode of ``delay + 1`` steps on a 7x7x3 image observation (MiniGrid's shape).

    Step 0 shows the cue (1 or 2) in every cell of channel 0. The following observations are
    blank except for channel 1, which marks the decision step with 1. At the decision step,
    action ``cue - 1`` earns reward 1; any other action 0. Earlier actions do nothing.

    :param delay: number of blank steps between the cue and the decision (>= 1).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, delay: int = 3) -> None:
        if delay < 1:
            raise ValueError(f"delay must be >= 1, got {delay}")
        self.delay = delay
        self.observation_space = spaces.Box(0, 255, (7, 7, 3), np.uint8)
        self.action_space = spaces.Discrete(3)
        self._cue = 1
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros((7, 7, 3), np.uint8)
        if self._t == 0:
            obs[..., 0] = self._cue
        if self._t == self.delay:
            obs[..., 1] = 1
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(1, 3))
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._t == self.delay:
            return self._obs(), float(int(action) == self._cue - 1), True, False, {}
        self._t += 1
        return self._obs(), 0.0, False, False, {}
