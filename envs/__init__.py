"""MiniGrid environments for the suite: VecEnv factory and a memory test task.

Never imports :mod:`agents`. The generalisation splits come with issue 4.
"""

from envs.memory import CueMemoryEnv
from envs.minigrid import make_minigrid_vec_env

__all__ = ["CueMemoryEnv", "make_minigrid_vec_env"]
