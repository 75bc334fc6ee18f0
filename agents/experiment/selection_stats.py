"""Selection statistics of a RIM core, from its active-unit masks: one function per statistic.

Shapes: ``T`` steps, ``N`` parallel environments, ``R`` units (``num_layers * num_units``,
layer-major, for a core of several layers), ``S`` steps pooled over environments. A mask is
``True`` where the unit was active at that step. ``starts`` ``(T, N)`` is ``True`` where step ``t``
of environment ``n`` begins an episode (its state was reset before the step); consecutive steps
``t - 1, t`` of one environment belong to one episode unless ``starts[t]``. ``valid`` ``(T, N)``
marks the steps that count (an evaluation's environments play on past their quota of episodes).
A segment of an episode cut by the end of a rollout counts as an episode of its own.

The three *cases* of a selection (:func:`selection_case`) separate what a switch rate of 0 and
"a unit always active" leave open (issue 26): ``fixed`` (one active set at every step of every
episode), ``per-episode`` (a set chosen per episode, then held) and ``switching`` (the set changes
within episodes). Units active (almost) always or never are reported apart (:func:`always_never`):
they are in every set or in none, so they change nothing in the case.
"""

from __future__ import annotations

import math

import numpy as np

ALWAYS_ON = 0.99
"""A unit active in more than this fraction of the steps counts as always on."""
NEVER_ON = 0.01
"""A unit active in fewer than this fraction of the steps counts as never on."""
HELD_SHARE = 0.99
"""A set *holds* when it covers at least this fraction of the steps: ``fixed`` when one set covers it over all
episodes (:func:`modal_share`), ``per-episode`` when each episode's own most common set does (:func:`episode_share`).
The 1% slack keeps a rare single-step deviation from changing the case. The first step of each episode is left
out (:func:`held_shares`)."""
CASES: tuple[str, ...] = ("fixed", "per-episode", "switching")
"""The cases of :func:`selection_case`; their index is the numeric code written to ``metrics.csv``."""
MAX_UNITS = 62
"""The most units :func:`set_codes` encodes (one bit each of an int64)."""
FREEZE_SWITCH = 0.01
"""A training rollout whose switch rate is below this counts as frozen (:func:`frozen_from`)."""
FREEZE_MIN_UPDATES = 3
"""The fewest logged updates a freeze spans (:func:`frozen_from`): one still update at the end of training is a
dip, not a selection that stopped."""


def unit_frequency(masks: np.ndarray) -> np.ndarray:
    """Fraction of the steps each unit was active.

    :param masks: ``(S, R)`` bool.
    :returns: ``(R,)`` float; zeros when ``S == 0``.
    """
    if len(masks) == 0:
        return np.zeros(masks.shape[-1])
    return masks.mean(axis=0, dtype=float)


def usage_entropy(frequency: np.ndarray) -> float:
    """Entropy of the mean usage distribution ``p = frequency / sum(frequency)``, divided by ``log R``.

    1 when every unit is used equally, ``log k / log R`` when the same ``k`` units carry every step
    (a top-k selection cannot go lower), 0 for one unit; 0 when ``R < 2`` or no unit was active.

    :param frequency: ``(R,)`` activation frequencies (:func:`unit_frequency`).
    """
    total = float(np.sum(frequency))
    if len(frequency) < 2 or total <= 0:
        return 0.0
    p = np.asarray(frequency, dtype=float) / total
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(len(frequency)))


def collapse_metric(frequency: np.ndarray, k: int = 1) -> float:
    """Collapse of the usage distribution, after Mittal, Bengio & Lajoie 2022 (*Is a Modular Architecture
    Enough?*, sec. 4; ``collapse_metric`` of ``sarthmit/Mod_Arch``), scaled for a top-``k`` selection.

    With ``p = frequency / sum(frequency)`` the usage distribution over the ``R`` units, Mod_Arch's metric is
    ``CM = R / (R - 1) * sum_i max(1 / R - p_i, 0)``: 0 for uniform use, 1 when one unit does everything.
    A top-``k`` selection puts ``1 / k`` on each of its units at the most collapsed, where
    ``CM = (R - k) / (R - 1)``; the value returned is ``CM`` divided by that, so 1 means that ``k`` units carry
    every step and 0 that all are used equally (``k = 1`` gives Mod_Arch's metric unchanged).

    :param frequency: ``(R,)`` activation frequencies (:func:`unit_frequency`).
    :param k: units active per step (summed over layers for a core of several layers).
    :returns: a value in [0, 1]; 0 when ``k >= R``, ``R < 2`` or no unit was active.
    """
    units = len(frequency)
    total = float(np.sum(frequency))
    if units < 2 or k >= units or total <= 0:
        return 0.0
    p = np.asarray(frequency, dtype=float) / total
    raw = units / (units - 1) * float(np.maximum(1.0 / units - p, 0.0).sum())
    return min(raw / ((units - k) / (units - 1)), 1.0)


def always_never(frequency: np.ndarray) -> tuple[list[int], list[int]]:
    """Indices of the units active in more than :data:`ALWAYS_ON` and in fewer than :data:`NEVER_ON` of the steps.

    :param frequency: ``(R,)`` activation frequencies.
    """
    freq = np.asarray(frequency, dtype=float)
    return np.flatnonzero(freq > ALWAYS_ON).tolist(), np.flatnonzero(freq < NEVER_ON).tolist()


def set_codes(masks: np.ndarray) -> np.ndarray:
    """Each step's active set as one integer (bit ``r`` set where unit ``r`` is active).

    :param masks: ``(..., R)`` bool, ``R <= MAX_UNITS``.
    :returns: ``(...)`` int64.
    :raises ValueError: more than :data:`MAX_UNITS` units.
    """
    units = masks.shape[-1]
    if units > MAX_UNITS:
        raise ValueError(f"set_codes encodes at most {MAX_UNITS} units, got {units}")
    weights = np.left_shift(np.int64(1), np.arange(units, dtype=np.int64))  # (R,)
    return (masks.astype(np.int64) * weights).sum(axis=-1)


def distinct_sets(codes: np.ndarray) -> int:
    """Number of different active sets.

    :param codes: ``(S,)`` set codes (:func:`set_codes`).
    """
    return len(np.unique(codes))


def episode_ids(starts: np.ndarray) -> np.ndarray:
    """An id per step naming its episode (segment): unique over environments.

    :param starts: ``(T, N)`` bool.
    :returns: ``(T, N)`` int64; step ``t`` of environment ``n`` and ``t + 1`` share an id unless ``starts[t + 1, n]``.
    """
    steps, envs = starts.shape
    segment = np.cumsum(starts, axis=0, dtype=np.int64)  # (T, N): 0 before the first start
    return segment + np.arange(envs, dtype=np.int64)[None, :] * (steps + 1)


def switch_rate(masks: np.ndarray, starts: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Within-episode switch rate: the fraction of unit flags that change between consecutive steps of one episode.

    Pooled over every pair of consecutive valid steps ``t - 1, t`` of an environment with ``not starts[t]``
    and over the units.

    :param masks: ``(T, N, R)`` bool.
    :param starts: ``(T, N)`` bool.
    :param valid: ``(T, N)`` bool, default all.
    :returns: changes / (pairs * R); 0 when there is no pair.
    """
    if masks.shape[0] < 2:
        return 0.0
    pair = ~starts[1:]  # (T - 1, N)
    if valid is not None:
        pair = pair & valid[1:] & valid[:-1]
    pairs = int(pair.sum())
    if pairs == 0:
        return 0.0
    changes = masks[1:] != masks[:-1]  # (T - 1, N, R)
    return float(changes[pair].sum()) / (pairs * masks.shape[-1])


def modal_share(codes: np.ndarray) -> float:
    """Fraction of the steps whose active set is the most common one.

    :param codes: ``(S,)`` set codes; 0 when empty.
    """
    if len(codes) == 0:
        return 0.0
    return float(np.unique(codes, return_counts=True)[1].max()) / len(codes)


def episode_share(codes: np.ndarray, episodes: np.ndarray) -> float:
    """Fraction of the steps whose active set is the most common one *of their episode*.

    :param codes: ``(S,)`` set codes.
    :param episodes: ``(S,)`` episode ids (:func:`episode_ids`).
    :returns: a value >= :func:`modal_share`; 0 when empty.
    """
    if len(codes) == 0:
        return 0.0
    _, episode = np.unique(episodes, return_inverse=True)  # (S,) 0 .. E - 1
    sets, code = np.unique(codes, return_inverse=True)  # (S,) 0 .. C - 1
    counts = np.bincount(episode.reshape(-1) * len(sets) + code.reshape(-1))  # steps per (episode, set)
    counts = np.pad(counts, (0, (episode.max() + 1) * len(sets) - len(counts)))
    return float(counts.reshape(-1, len(sets)).max(axis=1).sum()) / len(codes)


def held_shares(codes: np.ndarray, episodes: np.ndarray, first: np.ndarray) -> tuple[float, float]:
    """:func:`modal_share` and :func:`episode_share` over the steps that are not the first of an episode.

    Every episode's first step is chosen from the same initial state (zeros, before any input history), so a
    selection that picks one set at that step and then another, held, is still a held selection; the first
    steps are left out (unless nothing else is left).

    :param codes: ``(S,)`` set codes; ``episodes``: ``(S,)`` episode ids; ``first``: ``(S,)`` bool, the first steps.
    """
    later = ~first
    if later.any():
        codes, episodes = codes[later], episodes[later]
    return modal_share(codes), episode_share(codes, episodes)


def selection_case(overall: float, within: float) -> str:
    """The case of a selection (module docstring) from :func:`modal_share` and :func:`episode_share`.

    ``fixed`` if ``overall >= HELD_SHARE``; else ``per-episode`` if ``within >= HELD_SHARE``; else ``switching``.
    """
    if overall >= HELD_SHARE:
        return "fixed"
    return "per-episode" if within >= HELD_SHARE else "switching"


def selection_summary(
    masks: np.ndarray, starts: np.ndarray, valid: np.ndarray | None = None, k: int = 1
) -> dict[str, float]:
    """Every statistic of this module over ``masks``, as numbers (for ``metrics.csv`` and W&B).

    :param masks: ``(T, N, R)`` bool.
    :param starts: ``(T, N)`` bool.
    :param valid: ``(T, N)`` bool, default all.
    :param k: units active per step (for :func:`collapse_metric`).
    :returns: ``switch_rate``, ``usage_entropy``, ``collapse``, ``distinct_sets``, ``modal_share`` and
        ``episode_share`` (:func:`held_shares`), ``case`` (the index in :data:`CASES`), ``always_on`` and
        ``never_on`` (counts of units), ``freq_u<r>`` per unit; empty when no step is valid.
    """
    keep = np.ones(starts.shape, dtype=bool) if valid is None else valid
    flat = masks[keep]  # (S, R)
    if len(flat) == 0:
        return {}
    frequency = unit_frequency(flat)
    codes = set_codes(flat)  # (S,)
    overall, within = held_shares(codes, episode_ids(starts)[keep], starts[keep])
    always, never = always_never(frequency)
    return {
        "switch_rate": switch_rate(masks, starts, valid),
        "usage_entropy": usage_entropy(frequency),
        "collapse": collapse_metric(frequency, k),
        "distinct_sets": float(distinct_sets(codes)),
        "modal_share": overall,
        "episode_share": within,
        "case": float(CASES.index(selection_case(overall, within))),
        "always_on": float(len(always)),
        "never_on": float(len(never)),
        **{f"freq_u{r}": float(f) for r, f in enumerate(frequency)},
    }


def frozen_from(
    frames: list[int] | np.ndarray, switch: list[float] | np.ndarray, min_updates: int = FREEZE_MIN_UPDATES
) -> int | None:
    """When a selection froze over training: the first logged frame count from which the rollout switch rate
    stays below :data:`FREEZE_SWITCH` to the last update, over at least ``min_updates`` logged updates.

    :param frames: ``(U,)`` frame counts of the logged updates, increasing; ``switch``: ``(U,)`` their switch rates.
    :param min_updates: the fewest still updates at the end that count as a freeze (fewer: a dip, ``None``).
    :returns: that frame count, or ``None`` when the last update switches, the still stretch at the end is
        shorter than ``min_updates``, or nothing was logged.
    :raises ValueError: ``min_updates < 1``, or ``frames`` and ``switch`` of different lengths.
    """
    if min_updates < 1:
        raise ValueError(f"min_updates must be >= 1, got {min_updates}")
    frames, switch = list(frames), list(switch)
    if len(frames) != len(switch):
        raise ValueError(f"frames and switch must have one entry per update, got {len(frames)} and {len(switch)}")
    still = next((i for i, rate in enumerate(reversed(switch)) if rate >= FREEZE_SWITCH), len(switch))
    return int(frames[-still]) if still >= min_updates else None
