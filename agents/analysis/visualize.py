"""Which RIM units are active: activation GIFs, heatmaps and per-unit statistics of trained runs.

Everything renders with matplotlib's Agg canvas (no pyplot, no display). ``R`` below is the
number of heatmap rows: ``num_units`` for a one-layer core, ``num_layers * num_units``
(layer-major) otherwise; ``T`` is the number of steps of an episode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from minigrid.core.actions import Actions
from omegaconf import OmegaConf

from agents.analysis.activations import (
    RIM_CORES,
    STATS_STEM,
    activation_stats,
    active_mask,
    check_conditions,
    format_stats_table,
    summarize_activations,
    unit_labels,
    write_activation_stats,
)
from agents.experiment.atomic import atomic_path
from agents.experiment.recording import Recording, record_episode, save_gif
from agents.experiment.run_folder import load_run, load_run_config

__all__ = [
    "RIM_CORES",
    "STATS_STEM",
    "activation_frames",
    "activation_gif",
    "activation_stats",
    "format_stats_table",
    "save_activation_heatmap",
    "save_frequency_plot",
    "summarize_activations",
    "visualize_run",
    "write_activation_stats",
]

log = logging.getLogger(__name__)

GIF_FIGSIZE: tuple[float, float] = (10.0, 4.0)
GIF_DPI = 72
_CMAP = ListedColormap(["#eeeeee", "#2166ac"]).with_extremes(bad="white")
_MARKER_COLOR = "#d6604d"
_FACTOR_CMAP = LinearSegmentedColormap.from_list("factor", ["#ffffff", "#e08214"])


def _activity(recording: Recording) -> tuple[np.ndarray, list[str]]:
    """The heatmap matrix ``(R, T)`` float (1.0 active, 0.0 inactive) and its row labels."""
    layers = active_mask(recording)
    steps, num_layers, num_units = layers.shape
    return layers.reshape(steps, -1).T.astype(float), unit_labels(num_layers, num_units)


def _draw_heatmap(ax: Axes, activity: np.ndarray, labels: list[str]) -> AxesImage:
    """Draw units (rows) x steps (columns) on ``ax``; NaN cells (steps not yet shown) stay blank.

    :param activity: ``(R, T)`` with 1.0 active, 0.0 inactive, NaN hidden.
    """
    image = ax.imshow(
        np.ma.masked_invalid(activity), aspect="auto", interpolation="nearest", cmap=_CMAP, vmin=0.0, vmax=1.0
    )
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("step")
    ax.set_ylabel("unit (blue: active)")
    return image


def _action_name(action: int) -> str:
    """MiniGrid's name of ``action`` (``left``, ``forward``, ...), or the number."""
    try:
        return Actions(action).name
    except ValueError:
        return str(action)


def _frame_title(recording: Recording, step: int, reward_so_far: float) -> str:
    """Title of GIF frame ``step`` (0 .. T): where, which step, which action, reward so far."""
    action = f"action {_action_name(int(recording.actions[step]))}" if step < recording.length else "episode over"
    return (
        f"{recording.condition}  level {recording.level_seed}  step {step}/{recording.length}  "
        f"{action}  reward {reward_so_far:.2f}"
    )


class _ActivationFigure:
    """The fixed-size figure of the activation GIF, redrawn per step by blitting.

    Axes, ticks and labels are drawn once; each frame redraws only the environment image,
    the heatmap, the step marker and the title.
    """

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.activity, labels = _activity(recording)  # (R, T)
        self.shown = np.full_like(self.activity, np.nan)
        self.rewards_so_far = np.concatenate([[0.0], np.cumsum(recording.rewards)])  # (T + 1,)
        fig = Figure(figsize=GIF_FIGSIZE, dpi=GIF_DPI)
        self.fig, self.canvas = fig, FigureCanvasAgg(fig)
        env_ax, heat_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.14, top=0.86, wspace=0.12)
        env_ax.set_axis_off()
        self.env_image = env_ax.imshow(recording.frames[0])
        self.heatmap = _draw_heatmap(heat_ax, self.shown, labels)
        self.marker = heat_ax.axvline(0.0, color=_MARKER_COLOR, linewidth=2)
        self.title = fig.suptitle("")
        for artist in (self.env_image, self.heatmap, self.marker, self.title):
            artist.set_animated(True)
        self.changing = [self.env_image, self.heatmap, *heat_ax.spines.values(), self.marker, self.title]
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(fig.bbox)

    def render(self, step: int) -> np.ndarray:
        """GIF frame ``step`` (0 .. T), ``(H, W, 3)`` uint8."""
        steps = self.activity.shape[1]
        self.env_image.set_data(self.recording.frames[step])
        self.shown[:, : step + 1] = self.activity[:, : step + 1]
        self.heatmap.set_data(np.ma.masked_invalid(self.shown))
        self.marker.set_xdata([min(step, steps - 1)] * 2)
        self.marker.set_visible(step < steps)
        self.title.set_text(_frame_title(self.recording, step, float(self.rewards_so_far[step])))
        self.canvas.restore_region(self.background)
        for artist in self.changing:
            self.fig.draw_artist(artist)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def activation_frames(recording: Recording) -> Iterator[np.ndarray]:
    """The ``T + 1`` frames of :func:`activation_gif`, each ``(H, W, 3)`` uint8 of one fixed size.

    Frame ``i`` shows the environment frame ``i`` beside the units x steps heatmap of steps
    ``0 .. i`` (the units that chose the action taken from frame ``i`` are in column ``i``,
    marked by a vertical line); the last frame, after the final step, shows the whole episode.

    :raises ValueError: the recording has no frames or no active-unit mask.
    """
    if not recording.frames:
        raise ValueError(f"the recording of {recording.condition!r} has no frames (recorded with render=False?)")
    figure = _ActivationFigure(recording)
    for step in range(len(recording.frames)):
        yield figure.render(step)


def activation_gif(recording: Recording, path: str | Path, fps: float = 4) -> Path:
    """Write the activation GIF of a RIM recording: environment beside the growing unit heatmap.

    :param recording: an episode recorded from a RIM core with frames (see :func:`activation_frames`).
    :param path: GIF to write (atomically; parent folders are created).
    :param fps: frames per second.
    :returns: ``path``.
    :raises ValueError: no frames, no active-unit mask, or ``fps <= 0``.
    """
    active_mask(recording)
    return save_gif(activation_frames(recording), path, fps=fps)


def _save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically, creating parent folders."""
    target = Path(path)
    with atomic_path(target) as tmp:
        FigureCanvasAgg(fig).print_png(tmp)
    return target


def _factor_rows(recording: Recording) -> tuple[np.ndarray, list[str]]:
    """The factors of a recording as heatmap rows ``(F, T)`` in [0, 1] (each divided by its largest value; ``room``
    shades from the first room, white, to the last) and their labels (``room`` says its range)."""
    rows, labels = [], []
    for name, values in recording.factors.items():
        top = float(np.max(values)) if len(values) else 0.0
        rows.append(values / top if top > 0 else values.astype(float))
        labels.append(f"{name} (0-{int(top)})" if top > 1 else name)
    return np.array(rows, dtype=float), labels


def save_activation_heatmap(recording: Recording, path: str | Path) -> Path:
    """Write the full-episode units x steps heatmap of a RIM recording as a PNG.

    Steps that received a non-zero reward are marked by a vertical line. When the recording holds environment
    factors (:mod:`envs.factors`), they are extra rows under the units (orange: the factor holds), on the
    same steps.

    :returns: ``path``.
    :raises ValueError: the recording has no active-unit mask.
    """
    activity, labels = _activity(recording)
    factors, factor_labels = _factor_rows(recording) if recording.factors else (np.zeros((0, 0)), [])
    steps = activity.shape[1]
    rows = len(labels) + len(factor_labels)
    fig = Figure(figsize=(min(max(6.0, 2.0 + 0.08 * steps), 16.0), max(2.5, 1.4 + 0.3 * rows)), dpi=100)
    if factor_labels:
        ax, factor_ax = fig.subplots(2, 1, sharex=True, height_ratios=[len(labels), len(factor_labels)])
        factor_ax.imshow(factors, aspect="auto", interpolation="nearest", cmap=_FACTOR_CMAP, vmin=0.0, vmax=1.0)
        factor_ax.set_yticks(range(len(factor_labels)), factor_labels)
        factor_ax.set_xlabel("step")
        factor_ax.set_ylabel("factor")
    else:
        ax = fig.subplots()
    _draw_heatmap(ax, activity, labels)
    axes = [ax, factor_ax] if factor_labels else [ax]
    for step in np.flatnonzero(recording.rewards):
        for each in axes:
            each.axvline(float(step), color=_MARKER_COLOR, linewidth=1.5)
    if factor_labels:
        ax.set_xlabel("")
    ax.set_title(
        f"{recording.condition}  level {recording.level_seed}  {steps} steps  return {recording.total_return:.2f}"
    )
    fig.tight_layout()
    return _save_figure(fig, path)


def save_frequency_plot(stats: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Bar chart of each unit's activation frequency, one bar group per unit, one bar per condition.

    A dashed line marks ``k / num_units``, the frequency every unit would have if all shared the work.

    :returns: ``path``.
    """
    if not stats:
        raise ValueError("save_frequency_plot needs at least one condition's statistics")
    units = list(stats[0]["units"])
    fig = Figure(figsize=(max(6.0, 1.0 + 0.5 * len(units) * (1 + 0.25 * len(stats))), 4.0), dpi=100)
    ax = fig.subplots()
    width = 0.8 / len(stats)
    x = np.arange(len(units))
    for i, s in enumerate(stats):
        ax.bar(x + (i - (len(stats) - 1) / 2) * width, s["unit_frequency"], width, label=s["condition"])
    even = stats[0]["mean_active"] / stats[0]["num_units"]
    ax.axhline(even, color="black", linestyle="--", linewidth=1, label="k / num_units")
    ax.set_xticks(x, units)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("unit")
    ax.set_ylabel("fraction of steps active")
    ax.legend(fontsize="small", ncols=min(len(stats) + 1, 4), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    return _save_figure(fig, path)


def visualize_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    conditions: Sequence[str] | None = None,
    episodes: int = 10,
    fps: float = 4,
    max_steps: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Activation GIFs, heatmaps and statistics of a trained RIM run, per test condition.

    Writes into ``out_dir``: ``<condition>.gif`` (episode 0, see :func:`activation_gif`),
    ``<condition>_heatmap.png`` (episode 0, full), ``activation_stats.{json,csv,md}`` over
    level seeds ``0 .. episodes - 1`` of each condition (deterministic actions) and
    ``activation_frequency.png``.

    :param run_dir: a run folder written by :func:`agents.experiment.run.train`.
    :param out_dir: default ``<run_dir>/visualize``.
    :param conditions: test conditions (default: all of the split's).
    :param episodes: episodes per condition for the statistics.
    :param fps: GIF frames per second.
    :param max_steps: cut episodes after this many steps (default: play them out).
    :param device: torch device to load the model on.
    :returns: ``{"out_dir": Path, "files": [Path, ...], "stats": {condition: statistics}}``.
    :raises ValueError: a folder without ``config.yaml``/``model.zip``, a non-RIM core, an
        unknown condition (listing the valid ones), ``episodes < 1`` or ``fps <= 0``.
    """
    run = Path(run_dir)
    core = OmegaConf.select(load_run_config(run), "model.core")
    if core not in RIM_CORES:
        raise ValueError(f"run {run} has core {core!r}; visualize needs a RIM core, one of {list(RIM_CORES)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    model, split, _ = load_run(run, device=device)
    names = check_conditions(split, conditions)
    out = run / "visualize" if out_dir is None else Path(out_dir)
    files: list[Path] = []
    stats: dict[str, dict[str, Any]] = {}
    for name in names:
        log.info("visualising %s: %d episodes", name, episodes)
        first = record_episode(model, split.condition(name), 0, deterministic=True, max_steps=max_steps, render=True)
        files.append(activation_gif(first, out / f"{name}.gif", fps=fps))
        files.append(save_activation_heatmap(first, out / f"{name}_heatmap.png"))
        stats[name] = activation_stats(model, split.condition(name), episodes, deterministic=True, max_steps=max_steps)
    files += write_activation_stats(list(stats.values()), out)
    files.append(save_frequency_plot(list(stats.values()), out / "activation_frequency.png"))
    return {"out_dir": out, "files": files, "stats": stats}
