"""MiniGrid's partial observation, built in one pass (same array as ``MiniGridEnv.gen_obs``).

MiniGrid builds each observation by copying the agent's view into a new ``Grid`` (one ``Wall``
object per cell outside the map), rotating that grid one quarter turn at a time through further
new grids, walking it for visibility and finally encoding it cell by cell. In-process training
spends most of its environment time there. :func:`fast_gen_obs` reads each cell of the view
once, straight into the agent's frame, and runs the same visibility sweep on booleans; the
result is identical (tested against ``gen_obs`` over random play in many environments).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import gymnasium as gym
import numpy as np
from minigrid.core.constants import DIR_TO_VEC, OBJECT_TO_IDX
from minigrid.core.grid import Grid
from minigrid.core.world_object import Wall
from minigrid.minigrid_env import MiniGridEnv

logger = logging.getLogger(__name__)

_EMPTY: tuple[int, int, int] = (OBJECT_TO_IDX["empty"], 0, 0)
_WALL: tuple[int, int, int] = tuple(int(v) for v in Wall().encode())  # cells outside the map


def _visible(opaque: list[list[bool]], size: int) -> np.ndarray:
    """MiniGrid's visibility sweep (``Grid.process_vis``) on an opacity map.

    :param opaque: ``opaque[x][y]`` for the rotated view, agent at ``(size // 2, size - 1)``
        looking towards ``y = 0``.
    :returns: ``(size, size)`` boolean mask indexed ``[x, y]``.
    """
    mask = [[False] * size for _ in range(size)]
    mask[size // 2][size - 1] = True
    for j in reversed(range(size)):
        for i in range(size - 1):
            if mask[i][j] and not opaque[i][j]:
                mask[i + 1][j] = True
                if j > 0:
                    mask[i + 1][j - 1] = True
                    mask[i][j - 1] = True
        for i in reversed(range(1, size)):
            if mask[i][j] and not opaque[i][j]:
                mask[i - 1][j] = True
                if j > 0:
                    mask[i - 1][j - 1] = True
                    mask[i][j - 1] = True
    return np.array(mask, dtype=bool)


def fast_view(env: MiniGridEnv) -> tuple[np.ndarray, np.ndarray] | None:
    """The agent's view in one pass: every view cell's encoding and which cells the agent sees.

    View cell ``(vx, vy)`` (agent at ``(V // 2, V - 1)``, facing ``vy = 0``) shows the world cell
    ``agent_pos + forward * (V - 1 - vy) + right * (vx - V // 2)``: what MiniGrid's slice and
    quarter turns amount to. The visibility is ``MiniGridEnv.gen_obs_grid``'s mask (all ``True`` when the
    environment sees through walls).

    :returns: ``(codes, visible)``: ``(V, V, 3)`` uint8 encodings before masking (the agent's own cell as the
        grid holds it, cells outside the map as walls) and a ``(V, V)`` bool mask, both indexed ``[vx, vy]``
        with ``V = env.agent_view_size``; ``None`` when the grid is not MiniGrid's own ``Grid`` class.
    """
    grid = env.grid
    if type(grid) is not Grid:
        return None
    size = env.agent_view_size
    width, height, cells = grid.width, grid.height, grid.grid
    forward_x, forward_y = DIR_TO_VEC[env.agent_dir]
    right_x, right_y = -forward_y, forward_x
    agent_x, agent_y = env.agent_pos
    half = size // 2
    codes: list[tuple[int, int, int]] = []
    opaque: list[list[bool]] = []
    for vx in range(size):
        column: list[bool] = []
        side_x, side_y = agent_x + right_x * (vx - half), agent_y + right_y * (vx - half)
        for vy in range(size):
            ahead = size - 1 - vy
            x, y = side_x + forward_x * ahead, side_y + forward_y * ahead
            if 0 <= x < width and 0 <= y < height:
                cell = cells[y * width + x]
                if cell is None:
                    codes.append(_EMPTY)
                    column.append(False)
                else:
                    codes.append(cell.encode())
                    column.append(not cell.see_behind())
            else:
                codes.append(_WALL)
                column.append(True)
        opaque.append(column)
    image = np.array(codes, dtype=np.uint8).reshape(size, size, 3)
    visible = np.ones((size, size), dtype=bool) if env.see_through_walls else _visible(opaque, size)
    return image, visible


def fast_gen_obs(env: MiniGridEnv) -> dict[str, Any]:
    """The observation ``MiniGridEnv.gen_obs`` returns, without building intermediate grids (:func:`fast_view`).

    :returns: ``{"image": (V, V, 3) uint8, "direction": int, "mission": str}`` with
        ``V = env.agent_view_size``, indexed ``[vx, vy]``.
    """
    view = fast_view(env)
    if view is None:
        return MiniGridEnv.gen_obs(env)
    image, visible = view
    size = env.agent_view_size
    image[~visible] = 0
    image[size // 2, size - 1] = env.carrying.encode() if env.carrying else _EMPTY
    return {"image": image, "direction": env.agent_dir, "mission": env.mission}


def has_stock_observations(env: MiniGridEnv) -> bool:
    """Whether ``env`` builds observations with MiniGrid's own, unmodified code (or already
    with :func:`fast_gen_obs`)."""
    cls = type(env)
    own = vars(env).get("gen_obs")
    return (
        cls.gen_obs is MiniGridEnv.gen_obs
        and cls.gen_obs_grid is MiniGridEnv.gen_obs_grid
        and cls.get_view_exts is MiniGridEnv.get_view_exts
        and (own is None or _is_fast(own))
    )


def _is_fast(gen_obs: Any) -> bool:
    return isinstance(gen_obs, functools.partial) and gen_obs.func is fast_gen_obs


class FastObservations(gym.Wrapper):
    """Make the wrapped MiniGrid environment build observations with :func:`fast_gen_obs`.

    Applies only where the environment uses MiniGrid's stock observation code (a subclass that
    overrides ``gen_obs``, ``gen_obs_grid`` or ``get_view_exts`` keeps its own, with a log
    message); the wrapper then changes nothing else. Wrap the MiniGrid environment before any
    wrapper that calls ``gen_obs`` itself.

    :param env: a MiniGrid environment (possibly wrapped).
    :raises ValueError: if ``env`` is not a MiniGrid environment.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(base, MiniGridEnv):
            raise ValueError(f"FastObservations needs a MiniGrid environment, got {type(base).__name__}")
        self.active = has_stock_observations(base)
        if self.active:
            base.gen_obs = functools.partial(fast_gen_obs, base)  # picklable, unlike a bound method
        else:
            logger.info("%s has its own observation code; FastObservations leaves it as is", type(base).__name__)


def with_fast_observations(env: gym.Env) -> gym.Env:
    """``FastObservations(env)`` for a MiniGrid environment; any other environment unchanged."""
    return FastObservations(env) if isinstance(env.unwrapped, MiniGridEnv) else env
