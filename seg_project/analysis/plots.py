"""Figures of training runs (loss, loss components, learning rate, validation AP), written
as PNG files.

Figures are drawn on plain :class:`matplotlib.figure.Figure` objects (Agg, no screen, no pyplot
state) and written atomically; each run keeps its color in every figure. Iterations are on
the x axis, with epochs on top when the runs share an epoch length
(:mod:`seg_project.analysis.curves`).

Reading runs (:mod:`seg_project.analysis.curves`) and the summary table
(:mod:`seg_project.analysis.summary`) are importable from here as well.
"""

import logging
import math
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..utils.atomic_files import atomic_write, prepare_out_dir
from .curves import (
    EVAL_TASKS,
    TOTAL_LOSS,
    RunCurves,
    load_run,
    load_runs,
    read_metrics,
    read_run_config,
)
from .summary import SUMMARY_COLUMNS, format_summary, summarize_runs, write_summary

__all__ = [
    "RunCurves",
    "SUMMARY_COLUMNS",
    "format_summary",
    "load_run",
    "load_runs",
    "plot_ap",
    "plot_ap50_per_class",
    "plot_loss",
    "plot_loss_components",
    "lr_figure",
    "plot_lr",
    "plot_runs",
    "read_metrics",
    "read_run_config",
    "run_colors",
    "smooth",
    "smoothing_window",
    "summarize_runs",
    "write_summary",
]

logger = logging.getLogger(__name__)

# Loss components in the order Mask R-CNN reports them; other "loss_*" keys follow, sorted.
_LOSS_ORDER = ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")
_TASK_STYLE = {"segm": "-", "bbox": "--", "pathology": "-"}
_DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))
    return path


def run_colors(count: int) -> List:
    """One color per run (tab10, repeating after ten runs).

    Args:
        count: the number of runs.

    Returns:
        list: ``count`` RGB colors.
    """
    palette = colormaps["tab10"].colors
    return [palette[i % len(palette)] for i in range(count)]


def smoothing_window(length: int, window: int = 20) -> int:
    """The moving-median window :func:`smooth` uses for a series.

    Args:
        length: the points in the series.
        window: the window asked for.

    Returns:
        int: ``window``, capped at a fifth of the series so that short runs keep their shape.
    """
    return min(window, max(1, length // 5))


def smooth(values: np.ndarray, window: int = 20) -> np.ndarray:
    """Centered moving median (NaN ignored); the window shrinks at the ends of the series.

    Args:
        values: the series.
        window: the window asked for (see :func:`smoothing_window`).

    Returns:
        np.ndarray: the smoothed series, as long as ``values``.
    """
    values = np.asarray(values, dtype=np.float64)
    window = smoothing_window(len(values), window)
    if window <= 1:
        return values.copy()
    half = window // 2
    padded = np.pad(np.where(np.isfinite(values), values, np.nan), half,
                    constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN
        return np.nanmedian(windows, axis=1)


def _shared_epoch_length(runs: Sequence[RunCurves]) -> Optional[float]:
    """The runs' common iterations per epoch, or None if unknown or different."""
    lengths = {run.iters_per_epoch for run in runs}
    if len(lengths) == 1 and None not in lengths:
        return lengths.pop()
    return None


def _add_epoch_axis(ax, runs: Sequence[RunCurves]) -> str:
    """Give an iteration axis a top epoch axis when the runs share the epoch length; returns
    a note for the title when they do not."""
    length = _shared_epoch_length(runs)
    if length is None:
        unknown = [run.name for run in runs if not run.iters_per_epoch]
        if unknown:
            return f"no epoch axis: epoch length unknown for {', '.join(unknown)}"
        return "no epoch axis: the runs' epoch lengths differ"
    top = ax.secondary_xaxis("top", functions=(lambda it: (it + 1) / length,
                                               lambda ep: ep * length - 1))
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_xlabel("epoch")
    return ""


def _smoothing_note(runs: Sequence[RunCurves], keys: Sequence[str], window: int) -> str:
    """How the bold curves were smoothed (the window is smaller for short series)."""
    used = {smoothing_window(len(run.series[k][0]), window)
            for run in runs for k in keys if k in run.series}
    if used == {1}:
        return "logged values"
    size = f"{max(used)}" if len(used) == 1 else f"up to {max(used)}"
    return f"faint: logged values; bold: moving median of {size} points"


def _robust_top(raw: List[np.ndarray], smoothed: List[np.ndarray]) -> Optional[float]:
    """An upper y limit that shows the smoothed curves whole and cuts rare raw spikes."""
    tops = [np.nanpercentile(r, 98) for r in raw if np.isfinite(r).any()]
    tops += [np.nanmax(s) for s in smoothed if np.isfinite(s).any()]
    return max(tops) * 1.08 if tops else None


def _plot_raw_and_smoothed(ax, runs, colors, key: str, window: int) -> bool:
    """Draw ``key`` of each run (faint raw, bold smoothed); returns whether anything was drawn."""
    raw, smoothed = [], []
    for run, color in zip(runs, colors):
        if key not in run.series:
            continue
        its, values = run.series[key]
        values = np.where(np.isfinite(values), values, np.nan)
        line = smooth(values, window)
        marker = "o" if len(its) == 1 else None
        ax.plot(its, values, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(its, line, color=color, linewidth=1.8, marker=marker, label=run.name)
        raw.append(values)
        smoothed.append(line)
    if not raw:
        ax.text(0.5, 0.5, f"no {key}", ha="center", va="center", transform=ax.transAxes)
        return False
    top = _robust_top(raw, smoothed)
    if top is not None and top > 0 and all(np.nanmin(v) >= 0 for v in raw
                                           if np.isfinite(v).any()):
        ax.set_ylim(0, top)
    ax.grid(True, alpha=0.3)
    return True


def _runs_with(runs: Sequence[RunCurves], key: str) -> List[RunCurves]:
    return [run for run in runs if key in run.series]


def _title(text: str, note: str) -> str:
    return f"{text}\n({note})" if note else text


def plot_loss(runs: Sequence[RunCurves], colors, path: Path, window: int = 20) -> Optional[Path]:
    """``loss.png``: total loss per iteration (raw faint, moving median bold), epochs on top.

    Args:
        runs: the loaded runs.
        colors: one color per run (:func:`run_colors`).
        path: the PNG to write.
        window: the moving-median window.

    Returns:
        The path written, or None when no run logged the total loss.
    """
    if not _runs_with(runs, TOTAL_LOSS):
        logger.warning(f"no {TOTAL_LOSS} in any run: {path.name} not written")
        return None
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    _plot_raw_and_smoothed(ax, runs, colors, TOTAL_LOSS, window)
    note = _add_epoch_axis(ax, runs)
    ax.set_xlabel("iteration")
    ax.set_ylabel("total loss")
    ax.set_title(_title(f"Training loss ({_smoothing_note(runs, [TOTAL_LOSS], window)})",
                        note))
    ax.legend(title="run")
    return _save(fig, path)


def _loss_components(runs: Sequence[RunCurves]) -> List[str]:
    keys = {k for run in runs for k in run.keys_with_prefix("loss_")}
    ordered = [k for k in _LOSS_ORDER if k in keys]
    return ordered + sorted(keys - set(ordered))


def plot_loss_components(runs: Sequence[RunCurves], colors, path: Path,
                         window: int = 20) -> Optional[Path]:
    """``loss_components.png``: a grid with one panel per ``loss_*`` key.

    Args:
        runs: the loaded runs.
        colors: one color per run (:func:`run_colors`).
        path: the PNG to write.
        window: the moving-median window.

    Returns:
        The path written, or None when no run logged a ``loss_*`` key.
    """
    keys = _loss_components(runs)
    if not keys:
        logger.warning(f"no loss_* keys in any run: {path.name} not written")
        return None
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax, key in zip(axes.flat, keys):
        _plot_raw_and_smoothed(ax, runs, colors, key, window)
        ax.set_title(key)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax in axes.flat[len(keys) - ncols:len(keys)]:  # the lowest panel of each column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("iteration")
    fig.suptitle(f"Loss components ({_smoothing_note(runs, keys, window)})")
    handles = [Line2D([], [], color=c, linewidth=1.8, label=r.name)
               for r, c in zip(runs, colors) if any(k in r.series for k in keys)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
               title="run")
    return _save(fig, path)


def lr_figure(runs: Sequence[RunCurves], colors) -> Optional[Figure]:
    """The figure of ``lr.png``: the learning rate per iteration as steps (log scale when all
    rates are positive).

    Every logged point is drawn (Detectron2 logs ``lr`` every 20 iterations, or once per
    epoch when an epoch is shorter) and held until the next one (``steps-post``): a rate
    changes only at a logged point, so a schedule's steps show as steps, never as ramps
    between two logs (a step falls somewhere between the last point before it and the first
    after it; a warmup shows as a staircase).

    Args:
        runs: the loaded runs.
        colors: one color per run (:func:`run_colors`).

    Returns:
        Figure, or None when no run logged the learning rate.
    """
    if not _runs_with(runs, "lr"):
        return None
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.add_subplot()
    positive = True
    for run, color in zip(runs, colors):
        if "lr" in run.series:
            its, lr = run.series["lr"]
            positive &= bool(np.all(lr > 0))
            ax.plot(its, lr, color=color, linewidth=1.8, label=run.name, drawstyle="steps-post")
            ax.plot(its, lr, color=color, linestyle="none", marker="o",
                    markersize=5 if len(its) == 1 else 2.5)
    if positive:
        ax.set_yscale("log")
    note = _add_epoch_axis(ax, runs)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate" + (" (log scale)" if positive else ""))
    ax.set_title(_title("Learning rate schedule (dots: logged values)", note))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="run")
    return fig


def plot_lr(runs: Sequence[RunCurves], colors, path: Path) -> Optional[Path]:
    """``lr.png``: :func:`lr_figure`, written.

    Args:
        runs: the loaded runs.
        colors: one color per run (:func:`run_colors`).
        path: the PNG to write.

    Returns:
        The path written, or None when no run logged the learning rate.
    """
    fig = lr_figure(runs, colors)
    if fig is None:
        logger.warning(f"no lr in any run: {path.name} not written")
        return None
    return _save(fig, path)


def _eval_x(runs: Sequence[RunCurves]) -> Tuple[Callable, str]:
    """The x values of evaluation points: epochs when every run knows them, else iterations."""
    if all(run.iters_per_epoch for run in runs):
        return (lambda run, its: run.to_epoch(its)), "epoch"
    return (lambda run, its: its), "iteration (epoch length unknown)"


def _plot_eval_panel(ax, runs, colors, keys_by_task: Dict[str, str], x_of) -> List[str]:
    """Plot one evaluation metric per task (segm solid, bbox dashed, dots unless there are
    many evaluations); returns the names of the runs drawn."""
    drawn = []
    for run, color in zip(runs, colors):
        for task, key in keys_by_task.items():
            if key in run.series:
                its, values = run.series[key]
                ax.plot(x_of(run, its), values, color=color, linestyle=_TASK_STYLE[task],
                        marker="o" if len(its) <= 60 else None, markersize=3.5, linewidth=1.6)
                drawn.append(run.name)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return drawn


def _tasks_note(tasks: Sequence[str]) -> str:
    return "segm solid, bbox dashed" if len(tasks) > 1 else tasks[0]


def _eval_legend(fig, runs, colors, tasks: Sequence[str], drawn: Sequence[str]) -> None:
    """One legend entry per run drawn (its color) and, with both tasks, per task (line
    style)."""
    handles = [Line2D([], [], color=c, linewidth=2, label=r.name)
               for r, c in zip(runs, colors) if r.name in drawn]
    if len(tasks) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=_TASK_STYLE[t], label=t)
                    for t in tasks]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))


def _mark_best(ax, runs, colors, metric: str, x_of, mode: str) -> None:
    for row, run, color in zip(summarize_runs(runs, metric, mode), runs, colors):
        if row["best_iteration"] is not None:
            ax.plot(x_of(run, row["best_iteration"]), row["best"], marker="*", markersize=14,
                    color=color, markeredgecolor="black", linestyle="none")


def plot_ap(runs: Sequence[RunCurves], colors, path: Path, metric: str = "segm/AP50",
            mode: str = "max") -> Optional[Path]:
    """``ap.png``: validation AP and AP50 per epoch, segm solid and bbox dashed; a star marks
    each run's best ``metric`` when it is one of them.

    Args:
        runs: the loaded runs.
        colors: one color per run (:func:`run_colors`).
        path: the PNG to write.
        metric: the metric whose best value is marked.
        mode: ``"max"`` or ``"min"``: which value of ``metric`` is best.

    Returns:
        The path written, or None when no run was evaluated.
    """
    names = ("AP", "AP50")
    tasks = [t for t in EVAL_TASKS if any(f"{t}/{n}" in r.series for r in runs for n in names)]
    if not tasks:
        logger.warning(f"no segm/AP, segm/AP50, bbox/AP or bbox/AP50 in any run (no "
                       f"evaluation ran?): {path.name} not written")
        return None
    x_of, xlabel = _eval_x(runs)
    fig = Figure(figsize=(12, 5), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    drawn = []
    for ax, name in zip(axes, names):
        drawn += _plot_eval_panel(ax, runs, colors, {t: f"{t}/{name}" for t in tasks}, x_of)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {name}", ha="center", va="center", transform=ax.transAxes)
        if metric in (f"{t}/{name}" for t in tasks) and _runs_with(runs, metric):
            _mark_best(ax, runs, colors, metric, x_of, mode)
        ax.set_title(f"{name} (IoU 0.50:0.95)" if name == "AP" else f"{name} (IoU 0.50)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{name} (%)")
    starred = metric in (f"{t}/{n}" for t in tasks for n in names) and _runs_with(runs, metric)
    star = f"; star: best {metric}" if starred else ""
    fig.suptitle(f"Validation AP ({_tasks_note(tasks)}{star})")
    _eval_legend(fig, runs, colors, tasks, drawn)
    return _save(fig, path)


def _per_class_names(runs: Sequence[RunCurves], prefix: str) -> List[str]:
    names: Dict[str, None] = {}
    for run in runs:
        names.update((k[len(prefix):], None) for k in run.keys_with_prefix(prefix))
    return list(names)


def plot_ap50_per_class(runs: Sequence[RunCurves], colors, path: Path) -> Optional[Path]:
    """``ap50_per_class.png``: one panel per class with ``segm/AP50-<class>`` (solid) and
    ``bbox/AP50-<class>`` (dashed) of each run.

    Args:
        runs: the loaded runs.
        colors: one color per run (:func:`run_colors`).
        path: the PNG to write.

    Returns:
        The path written, or None when no run has per-class keys.
    """
    classes = _per_class_names(runs, "segm/AP50-") or _per_class_names(runs, "bbox/AP50-")
    if not classes:
        return None
    tasks = [t for t in EVAL_TASKS if _per_class_names(runs, f"{t}/AP50-")]
    x_of, xlabel = _eval_x(runs)
    ncols = min(3, len(classes))
    nrows = math.ceil(len(classes) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    drawn = []
    for ax, name in zip(axes.flat, classes):
        drawn += _plot_eval_panel(ax, runs, colors, {t: f"{t}/AP50-{name}" for t in tasks}, x_of)
        ax.set_title(name)
    for ax in axes.flat[len(classes):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("AP50 (%)")
    for ax in axes.flat[max(0, len(classes) - ncols):len(classes)]:
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel(xlabel)
    gaps = any(not np.isfinite(run.series[k][1]).all() for run in runs
               for k in run.keys_with_prefix("segm/AP50-") + run.keys_with_prefix("bbox/AP50-"))
    fig.suptitle(f"Validation AP50 per class ({_tasks_note(tasks)})"
                 + ("\n(gaps: no instance of the class in the validation set)" if gaps else ""))
    _eval_legend(fig, runs, colors, tasks, drawn)
    return _save(fig, path)


# Pathology metrics drawn per evaluation (fractions), one panel each.
PATHOLOGY_PANELS = ("PQ", "AJI", "Dice", "mPQ")


def plot_pathology(runs: Sequence[RunCurves], colors, path: Path) -> Optional[Path]:
    """``pathology.png``: PQ, AJI, Dice and mPQ per epoch, one panel each, one line per run.

    Args:
        runs: the loaded runs.
        colors: one color per run (:func:`run_colors`).
        path: the PNG to write.

    Returns:
        The path written, or None when no run logged pathology metrics.
    """
    names = [n for n in PATHOLOGY_PANELS if _runs_with(runs, f"pathology/{n}")]
    if not names:
        return None
    x_of, xlabel = _eval_x(runs)
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True, squeeze=False)
    drawn = []
    for ax, name in zip(axes.flat, PATHOLOGY_PANELS):
        drawn += _plot_eval_panel(ax, runs, colors, {"pathology": f"pathology/{name}"}, x_of)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {name}", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"{name} (fraction)")
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    thresholds = sorted({float(v) for run in runs
                         for v in run.series.get("pathology/score_threshold", ([], []))[1]})
    counted = (f"score >= {', '.join(f'{t:g}' for t in thresholds)}" if thresholds
               else "score >= TEST.PATHOLOGY.SCORE_THRESHOLD")
    fig.suptitle(f"Validation pathology metrics (predictions with {counted})")
    _eval_legend(fig, runs, colors, ["pathology"], drawn)
    return _save(fig, path)


def plot_runs(runs: Sequence[RunCurves], out_dir, metric: str = "segm/AP50", mode: str = "max",
              window: int = 20) -> List[Path]:
    """Write the figures of the runs into ``out_dir`` (created if needed).

    Writes ``loss.png``, ``loss_components.png``, ``lr.png``, ``ap.png`` and, when their keys
    exist, ``ap50_per_class.png`` and ``pathology.png`` (PQ, AJI, Dice, mPQ per epoch); a
    figure whose data no run has is skipped with a warning. Existing files of these names are
    replaced (atomically); nothing is deleted.

    Args:
        runs: Loaded runs; each keeps its color in every figure.
        out_dir: Output folder.
        metric: The metric whose best value is starred in ``ap.png``.
        mode: ``"max"`` or ``"min"``: which value of ``metric`` is best.
        window: Points of the moving median of the loss curves.

    Returns:
        The paths written.
    """
    if not runs:
        raise ValueError("no run to plot")
    out_dir = prepare_out_dir(out_dir)
    colors = run_colors(len(runs))
    unknown = [run.name for run in runs if not run.iters_per_epoch]
    if unknown:
        logger.warning(f"epoch length unknown for {', '.join(unknown)}: the figures show "
                       f"iterations only")
    written = [
        plot_loss(runs, colors, out_dir / "loss.png", window),
        plot_loss_components(runs, colors, out_dir / "loss_components.png", window),
        plot_ap(runs, colors, out_dir / "ap.png", metric, mode),
        plot_lr(runs, colors, out_dir / "lr.png"),
        plot_ap50_per_class(runs, colors, out_dir / "ap50_per_class.png"),
        plot_pathology(runs, colors, out_dir / "pathology.png"),
    ]
    return [p for p in written if p is not None]
