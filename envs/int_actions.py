"""Discrete actions handed to the environment as Python ints.

SB3's VecEnvs pass each environment one element of a numpy array, a numpy integer. MiniGrid's
``step`` compares the action with the members of its ``IntEnum`` of actions, one after the
other, and every numpy-integer-to-enum comparison costs ~3.6 us (numpy first probes the enum
member for array interfaces, each probe a failed attribute lookup), against ~0.05 us for a
Python int: 10-20 us of a ~50 us step with :mod:`envs.fast_obs` observations.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class IntActions(gym.ActionWrapper):
    """Pass numpy-integer actions on as Python ints (same value, same behaviour, faster
    comparisons); any other action (a Python int, an array, ...) passes unchanged.

    :param env: an environment with a ``Discrete`` action space.
    :raises ValueError: any other action space.
    """

    def __init__(self, env: gym.Env) -> None:
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"IntActions needs a Discrete action space, got {env.action_space}")
        super().__init__(env)

    def action(self, action: Any) -> Any:
        """``action`` as an ``int`` if it is a numpy integer, else unchanged."""
        return int(action) if isinstance(action, np.integer) else action


def with_int_actions(env: gym.Env) -> gym.Env:
    """``IntActions(env)`` for a ``Discrete`` action space; any other environment unchanged."""
    return IntActions(env) if isinstance(env.action_space, spaces.Discrete) else env
