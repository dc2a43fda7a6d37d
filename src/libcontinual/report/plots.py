"""Matplotlib figures of continual-learning runs.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global backend state), so they can
be drawn from a training callback as well as from the ``report`` command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from libcontinual.report.load import Run

ACCURACY_LABEL = "accuracy (%)"
COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass
class Curve:
    """One line over tasks: mean per task, an optional ±std band, and how to draw it."""

    label: str
    mean: np.ndarray
    std: np.ndarray | None = None
    color: str | None = None
    linestyle: str = "-"


LEGEND_SIZE = 10  # legend text, readable when a figure is shrunk into a page or slide
FORMATS = ("png", "svg", "pdf")  # svg and pdf are vector graphics for papers


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` in the format its suffix names (png at 150 dpi, svg, pdf)."""
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return path


def figure_png(figure: Figure) -> np.ndarray:
    """The figure rendered as an RGB uint8 array (H, W, 3), e.g. for TensorBoard."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def task_axis(ax: Axes, num_tasks: int, classes_seen: Sequence[int] | None = None) -> None:
    """x = task index with a line at every task boundary; classes seen on the top axis when known."""
    ax.set_xlim(-0.5, num_tasks - 0.5)
    step = max(1, num_tasks // 20)
    ticks = list(range(0, num_tasks, step))
    ax.set_xticks(ticks)
    ax.set_xlabel("after training task")
    for boundary in range(num_tasks - 1):
        ax.axvline(boundary + 0.5, color="0.85", linewidth=0.8, zorder=0)
    if classes_seen is not None:
        top = ax.secondary_xaxis("top")
        top.set_xticks(ticks, [str(classes_seen[t]) for t in ticks])
        top.set_xlabel("classes seen")


def accuracy_axes(ax: Axes) -> None:
    ax.set_ylabel(ACCURACY_LABEL)
    ax.set_ylim(0, 102)
    ax.grid(axis="y", color="0.9")


def draw_curves(ax: Axes, curves: Sequence[Curve]) -> None:
    for index, curve in enumerate(curves):
        color = curve.color or COLORS[index % len(COLORS)]
        x = np.arange(len(curve.mean))
        ax.plot(
            x, curve.mean, marker="o", markersize=4, color=color, linestyle=curve.linestyle, label=curve.label
        )
        if curve.std is not None and np.any(curve.std > 0):
            low, high = np.clip(curve.mean - curve.std, 0, 100), np.clip(curve.mean + curve.std, 0, 100)
            ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)


def curves_figure(
    curves: Sequence[Curve], title: str, num_tasks: int, classes_seen: Sequence[int] | None = None
) -> Figure:
    """Accuracy after each task on everything seen so far, one line per curve (±std bands)."""
    figure = Figure(figsize=(7.5, 4.6))
    ax = figure.subplots()
    draw_curves(ax, curves)
    task_axis(ax, num_tasks, classes_seen)
    accuracy_axes(ax)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=LEGEND_SIZE, loc="best")
    return figure


def heatmap_figure(
    mean: np.ndarray, std: np.ndarray | None, title: str, task_labels: Sequence[str] | None = None
) -> Figure:
    """Accuracy matrix: row i = after training task i, column j = test set of task j; cells annotated.

    Cells above the diagonal (tasks not trained yet, with ``full_accuracy_matrix``) are set off by a
    staircase line; more than 10 tasks are annotated in whole percent so the numbers stay legible.
    """
    tasks = mean.shape[0]
    size = min(12.0, max(4.8, 0.55 * tasks + 2.4))
    figure = Figure(figsize=(size + 1.0, size))
    ax = figure.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(mean), cmap=colormaps["viridis"].with_extremes(bad="#eeeeee"), vmin=0, vmax=100
    )
    colorbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label(ACCURACY_LABEL)
    font = max(6.0, 10.0 - tasks / 4)
    digits = 1 if tasks <= 10 else 0
    for i, j in zip(*np.nonzero(~np.isnan(mean)), strict=True):
        text = f"{mean[i, j]:.{digits}f}"
        if std is not None and std[i, j] > 0:
            text += f"\n±{std[i, j]:.{digits}f}"
        color = "white" if mean[i, j] < 55 else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=font, color=color)
    if np.any(np.triu(~np.isnan(mean), 1)):
        corners = np.repeat(np.arange(tasks) + 0.5, 2)
        ax.plot(corners, np.concatenate([[-0.5], corners[:-1]]), color="black", linewidth=1.5)
    labels = list(task_labels) if task_labels is not None else [str(j) for j in range(tasks)]
    ax.set_xticks(range(tasks), labels, fontsize=min(9.0, font + 1), rotation=90 if tasks > 10 else 0)
    ax.set_yticks(range(tasks), [str(i) for i in range(tasks)], fontsize=min(9.0, font + 1))
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    ax.set_xticks(np.arange(tasks + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(tasks + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    ax.set_title(title, fontsize=10)
    return figure


def task_accuracy_figure(run: Run, classifier: str, classes_seen: Sequence[int] | None) -> Figure:
    """Accuracy of each task over time, from the task where it was learned (mean over seeds, no bands:
    one band per task would hide the lines)."""
    matrices = run.matrices(classifier)
    tasks = run.num_tasks
    figure = Figure(figsize=(7.5, 4.6))
    ax = figure.subplots()
    colors = _task_colors(tasks)
    for j in range(tasks):
        x = np.arange(j, tasks)
        values = matrices[:, j:, j]
        mean = values.mean(axis=0)
        ax.plot(x, mean, marker="o", markersize=3.5, color=colors[j], label=f"task {j}")
    task_axis(ax, tasks, classes_seen)
    accuracy_axes(ax)
    what = f", mean over {len(run.seeds)} seeds" if run.multi_seed else ""
    ax.set_title(f"Accuracy of each task over time ({classifier}{what})\n{run.title()}", fontsize=10)
    ax.legend(fontsize=LEGEND_SIZE, ncol=max(1, tasks // 12), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def old_new_figure(run: Run, classifier: str, classes_seen: Sequence[int] | None) -> Figure:
    """Per task: accuracy on old classes (earlier tasks) and new classes (this task), and on all seen."""
    old, new = run.old_new(classifier)
    tasks = run.num_tasks
    x = np.arange(tasks)
    width = 0.38
    figure = Figure(figsize=(7.5, 4.6))
    ax = figure.subplots()
    error = {"capsize": 2.5, "error_kw": {"linewidth": 0.8}} if run.multi_seed else {}
    bars = (
        (x[1:] - width / 2, old[:, 1:], COLORS[0], "old classes (earlier tasks)"),
        (x + width / 2, new, COLORS[3], "new classes (current task)"),
    )
    for position, values, color, label in bars:
        drawn = ax.bar(
            position,
            values.mean(axis=0),
            width,
            yerr=_std(run, values),
            color=color,
            label=label,
            edgecolor=color,
            linewidth=1.5,  # a bar at 0 % (old classes after finetune) still shows as a line
            **error,
        )
        if tasks <= 12 and not run.multi_seed:
            ax.bar_label(drawn, fmt="%.0f", fontsize=7, padding=1)
    curve = run.curve(classifier)
    ax.plot(x, curve.mean(axis=0), color="black", marker="o", markersize=4, label="all seen classes")
    task_axis(ax, tasks, classes_seen)
    accuracy_axes(ax)
    ax.set_ylim(-2, 102)  # room below 0 so a 0 % bar is not hidden by the axis
    ax.set_title(f"Old vs new classes ({classifier}, sample-weighted)\n{run.title()}", fontsize=10)
    ax.legend(fontsize=LEGEND_SIZE, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def training_figure(run: Run) -> Figure | None:
    """Training loss (and named loss terms) and training accuracy per epoch; task boundaries marked.

    Over several seeds: mean ± std when every seed trained the same epochs. None without epoch records.
    """
    per_seed = [seed.epochs for seed in run.seeds if seed.epochs]
    if not per_seed:
        return None
    if any(len(epochs) != len(per_seed[0]) for epochs in per_seed):
        per_seed = per_seed[:1]
    records = per_seed[0]
    x = np.arange(len(records))
    figure = Figure(figsize=(8.0, 5.6))
    loss_ax, accuracy_ax = figure.subplots(2, 1, sharex=True)
    terms = dict.fromkeys(k for r in records for k in r if k.startswith("loss_"))
    log_scale = _spans_decades([r["loss"] for epochs in per_seed for r in epochs])
    for index, key in enumerate(["loss", *terms]):
        values = np.array([[r.get(key, np.nan) for r in epochs] for epochs in per_seed], dtype=np.float64)
        style = "-" if key == "loss" else "--"
        label = "total loss" if key == "loss" else key
        _line_with_band(loss_ax, x, values, COLORS[index % len(COLORS)], style, label, band=not log_scale)
    train = np.array([[r["train_accuracy"] for r in epochs] for epochs in per_seed], dtype=np.float64)
    _line_with_band(accuracy_ax, x, train, COLORS[2], "-", "train accuracy (augmented batches)")
    loss_ax.set_ylabel("loss (log scale)" if log_scale else "loss")
    if log_scale:
        loss_ax.set_yscale("log")
    accuracy_axes(accuracy_ax)
    accuracy_ax.set_xlabel("epoch (over all tasks)")
    accuracy_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    starts = [i for i, r in enumerate(records) if r["epoch"] == 0]
    for ax in (loss_ax, accuracy_ax):
        for start in starts[1:]:
            ax.axvline(start - 0.5, color="0.5", linestyle=":", linewidth=1.0)
        ax.legend(fontsize=LEGEND_SIZE, loc="best")
    for start in starts[:: max(1, -(-len(starts) // 10))]:
        loss_ax.annotate(
            f"task {records[start]['task']}",
            (start - 0.4, 1.01),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="bottom",
            color="0.35",
        )
    figure.suptitle(f"Training per epoch: {run.title()}", fontsize=10)
    return figure


def _line_with_band(
    ax: Axes, x: np.ndarray, values: np.ndarray, color: str, style: str, label: str, band: bool = True
) -> None:
    """Mean over seeds (rows) with a ±std band; NaN (a loss term absent in some epochs) leaves gaps."""
    logged = ~np.isnan(values).all(axis=0)
    mean = np.full(values.shape[1], np.nan)
    mean[logged] = np.nanmean(values[:, logged], axis=0)
    ax.plot(x, mean, color=color, linestyle=style, marker=".", markersize=3, label=label)
    if band and values.shape[0] > 1:
        std = np.full(values.shape[1], np.nan)
        std[logged] = np.nanstd(values[:, logged], axis=0)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)


def _spans_decades(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > 30


def _std(run: Run, values: np.ndarray) -> np.ndarray | None:
    return values.std(axis=0) if run.multi_seed else None


def _task_colors(tasks: int) -> list:
    if tasks <= len(COLORS):
        return list(COLORS[:tasks])
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * j / max(1, tasks - 1)) for j in range(tasks)]
