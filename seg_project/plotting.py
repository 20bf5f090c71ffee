"""Training curves of Detectron2 runs: read ``metrics.json`` (+ ``config.yaml``), plot, summarize.

A run is a Detectron2 output folder holding ``metrics.json`` (Detectron2's ``JSONWriter``: one
JSON object per line with ``"iteration"`` and scalars) and, optionally, ``config.yaml``. A
resumed run appends to the same file, so an iteration may appear again later: the last
occurrence of a key at an iteration wins and every series is sorted by iteration. Blank and
unreadable lines (the truncated last line of a killed run) are skipped with a warning.

The epoch axis uses ``SOLVER.ITERS_PER_EPOCH`` of ``config.yaml`` (or ``MAX_ITER / EPOCHS``),
else the ``"epoch"`` values of ``metrics.json``; with neither, figures use iterations and say so.

Figures are drawn on plain :class:`matplotlib.figure.Figure` objects (Agg, no screen, no pyplot
state) and written atomically; each run keeps its color in every figure.
"""

import csv
import io
import json
import logging
import math
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .data.image_io import DatasetError

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

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
TOTAL_LOSS = "total_loss"
# Loss components in the order Mask R-CNN reports them; other "loss_*" keys follow, sorted.
_LOSS_ORDER = ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")
_EVAL_TASKS = ("segm", "bbox")
_TASK_STYLE = {"segm": "-", "bbox": "--"}
_DPI = 110

Series = Tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------
@dataclass
class RunCurves:
    """The scalar series of one training run.

    Attributes:
        name: Label of the run in figures and tables.
        metrics_file: The ``metrics.json`` the series were read from.
        series: Key -> (iterations ``int64``, values ``float64``), sorted by iteration.
        iters_per_epoch: Iterations per epoch, or None when unknown.
        epoch_source: Where ``iters_per_epoch`` came from ("" when unknown).
        max_iter: ``SOLVER.MAX_ITER`` of ``config.yaml`` (None when absent).
    """

    name: str
    metrics_file: Path
    series: Dict[str, Series]
    iters_per_epoch: Optional[float] = None
    epoch_source: str = ""
    max_iter: Optional[int] = None

    def to_epoch(self, iterations) -> Optional[np.ndarray]:
        """Epochs completed after ``iterations`` (``(iteration + 1) / iters_per_epoch``), or
        None when the epoch length is unknown."""
        if not self.iters_per_epoch:
            return None
        return (np.asarray(iterations, dtype=np.float64) + 1.0) / self.iters_per_epoch

    @property
    def last_iteration(self) -> int:
        """The highest iteration of any series."""
        return max(int(its[-1]) for its, _ in self.series.values())

    def keys_with_prefix(self, prefix: str) -> List[str]:
        """The series keys that start with ``prefix``, in the order they were first seen."""
        return [k for k in self.series if k.startswith(prefix)]


def _parse_record(text: str) -> Optional[dict]:
    """One metrics line as a dict with an integer ``"iteration"``, or None if it is not one."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    it = record.get("iteration")
    if isinstance(it, bool) or not isinstance(it, (int, float)) or not float(it).is_integer():
        return None
    record["iteration"] = int(it)
    return record


def _parse_line(text: str) -> Tuple[Optional[dict], bool]:
    """Parse a line; returns (record or None, whether it was recovered from a joined line).

    A killed run leaves a truncated last line without a newline; when the run is resumed,
    the next record is appended to it. Detectron2's records are flat, so the last ``{``
    starts the intact record.
    """
    record = _parse_record(text)
    if record is not None:
        return record, False
    start = text.rfind("{")
    if start > 0:
        record = _parse_record(text[start:])
        if record is not None:
            return record, True
    return None, False


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DatasetError(path, "file not found")
    if not path.is_file():
        raise DatasetError(path, "is not a file")


def _warn_lines(path: Path, lines: List[int], total: int, what: str) -> None:
    if not lines:
        return
    shown = ", ".join(str(n) for n in lines[:10]) + (" ..." if len(lines) > 10 else "")
    logger.warning(f"{path}: {len(lines)} {what} (line {shown} of {total})")


def read_metrics(path) -> Dict[str, Series]:
    """Read a Detectron2 ``metrics.json`` into sorted series.

    Args:
        path: The ``metrics.json`` file.

    Returns:
        Key -> (iterations, values) for every numeric key; the last occurrence of a key at an
        iteration wins (a resumed run rewrites iterations).

    Raises:
        DatasetError: The file is missing, or no line of it is a metrics record.
    """
    path = Path(path)
    _require_file(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    table: Dict[str, Dict[int, float]] = {}
    blank, bad, joined = [], [], []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            blank.append(number)
            continue
        record, recovered = _parse_line(text)
        if record is None:
            bad.append(number)
            continue
        if recovered:
            joined.append(number)
        iteration = record.pop("iteration")
        for key, value in record.items():
            if _is_number(value):
                table.setdefault(key, {})[iteration] = float(value)
    if not table:
        raise DatasetError(path, f"no Detectron2 metrics record (a JSON object with "
                                 f"'iteration' and scalars) in its {len(lines)} lines")
    last = max((n for n, line in enumerate(lines, 1) if line.strip()), default=0)
    if bad and bad[-1] == last:
        logger.warning(f"{path}: skipped the truncated last line {bad[-1]} (a killed run?)")
        bad.pop()
    _warn_lines(path, bad, len(lines), "unreadable line(s) skipped")
    _warn_lines(path, blank, len(lines), "blank line(s) skipped")
    _warn_lines(path, joined, len(lines), "line(s) with a truncated record followed by an "
                                          "intact one (a killed run resumed): the intact one "
                                          "was kept")
    series = {}
    for key, values in table.items():
        its = np.array(sorted(values), dtype=np.int64)
        series[key] = (its, np.array([values[i] for i in its.tolist()], dtype=np.float64))
    return series


def read_run_config(path) -> Dict[str, float]:
    """The epoch-related ``SOLVER`` keys of a Detectron2 ``config.yaml`` dump.

    Args:
        path: The ``config.yaml`` file.

    Returns:
        The keys among ``ITERS_PER_EPOCH``, ``MAX_ITER`` and ``EPOCHS`` that hold positive
        numbers (missing or zero keys are left out).

    Raises:
        DatasetError: The file is not YAML or not a mapping.
    """
    path = Path(path)
    _require_file(path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"is not a readable YAML file ({e})") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise DatasetError(path, "is not a Detectron2 config (its top level is not a mapping)")
    solver = cfg.get("SOLVER") or {}
    if not isinstance(solver, dict):
        raise DatasetError(path, "SOLVER is not a mapping")
    return {key: solver[key] for key in ("ITERS_PER_EPOCH", "MAX_ITER", "EPOCHS")
            if _is_number(solver.get(key)) and solver[key] > 0}


def _epoch_length(solver: Dict[str, float], series: Dict[str, Series]) -> Tuple[float, str]:
    """Iterations per epoch and where they came from, or (0, "") when unknown."""
    if "ITERS_PER_EPOCH" in solver:
        return float(solver["ITERS_PER_EPOCH"]), "config.yaml SOLVER.ITERS_PER_EPOCH"
    if "MAX_ITER" in solver and "EPOCHS" in solver:
        return solver["MAX_ITER"] / solver["EPOCHS"], "config.yaml SOLVER.MAX_ITER / EPOCHS"
    if "epoch" in series:
        its, epochs = series["epoch"]
        ok = np.isfinite(epochs) & (epochs > 0)
        if ok.any():
            return float(np.median((its[ok] + 1) / epochs[ok])), "metrics.json 'epoch'"
    return 0.0, ""


def _metrics_path(path: Path) -> Path:
    return path / METRICS_FILE if path.is_dir() else path


def load_run(path, name: Optional[str] = None) -> RunCurves:
    """Load one run.

    Args:
        path: A run folder (holding ``metrics.json`` and, optionally, ``config.yaml``) or a
            ``metrics.json`` file (its folder's ``config.yaml`` is used when present).
        name: The run's label; defaults to the name of its folder.

    Returns:
        The run's series and epoch length.

    Raises:
        DatasetError: No ``metrics.json``, or a file that cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "no such run folder or metrics file")
    metrics_file = _metrics_path(path)
    if path.is_dir() and not metrics_file.is_file():
        raise DatasetError(path, f"is not a Detectron2 run folder (no {METRICS_FILE} in it)")
    series = read_metrics(metrics_file)
    config_file = metrics_file.parent / CONFIG_FILE
    solver = read_run_config(config_file) if config_file.is_file() else {}
    if name is None:
        name = metrics_file.resolve().parent.name
    iters_per_epoch, source = _epoch_length(solver, series)
    if not source:
        missing = (f"no SOLVER.ITERS_PER_EPOCH in {config_file}" if config_file.is_file()
                   else f"no {config_file}")
        logger.warning(f"{name}: epoch length unknown ({missing}, no 'epoch' in "
                       f"{metrics_file}): using iterations")
    max_iter = solver.get("MAX_ITER")
    return RunCurves(name=name, metrics_file=metrics_file, series=series,
                     iters_per_epoch=iters_per_epoch or None, epoch_source=source,
                     max_iter=int(max_iter) if max_iter else None)


def _default_names(paths: Sequence[Path]) -> List[str]:
    """Folder names, made unique by adding parent folders (then a number) where they clash."""
    folders = [_metrics_path(p).resolve().parent for p in paths]
    names = [f.name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{f.parent.name}/{f.name}" for f in folders]
    seen: Dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def load_runs(paths: Sequence, labels: Optional[Sequence[str]] = None) -> List[RunCurves]:
    """Load several runs (see :func:`load_run`).

    Args:
        paths: Run folders or ``metrics.json`` files.
        labels: One label per run; defaults to unique folder names.

    Raises:
        ValueError: ``labels`` does not have one entry per run.
        DatasetError: A run cannot be read.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no run given")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} runs: give one label per run")
    names = list(labels) if labels is not None else _default_names(paths)
    return [load_run(p, n) for p, n in zip(paths, names)]


# --------------------------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------------------------
# (key of a summary row, column header of the Markdown table; "{metric}" is filled in)
SUMMARY_COLUMNS = (
    ("run", "run"),
    ("metric", "metric"),
    ("best", "best"),
    ("best_epoch", "best at epoch"),
    ("best_iteration", "best at iteration"),
    ("final", "final"),
    ("final_epoch", "final epoch"),
    ("evaluations", "evaluations"),
    ("final_total_loss", "final total_loss"),
    ("iterations", "iterations done"),
    ("max_iter", "MAX_ITER"),
)


def _finite_or_none(value) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


def _epoch_of(run: RunCurves, iteration: Optional[int]) -> Optional[float]:
    if iteration is None or not run.iters_per_epoch:
        return None
    return float(run.to_epoch(iteration))


def summarize_runs(runs: Sequence[RunCurves], metric: str = "segm/AP50",
                   mode: str = "max") -> List[Dict]:
    """Best and final value of ``metric`` per run, with the final total loss.

    Args:
        runs: Loaded runs.
        metric: A series key, e.g. ``"segm/AP50"``.
        mode: ``"max"`` if larger values are better, ``"min"`` otherwise. Ties go to the
            earliest evaluation; non-finite values are ignored.

    Returns:
        One dict per run with the keys of :data:`SUMMARY_COLUMNS` (None where not known).

    Raises:
        ValueError: Bad ``mode``, or ``metric`` is in none of the runs.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if not any(metric in run.series for run in runs):
        known = sorted({k for run in runs for k in run.series if k.split("/")[0] in _EVAL_TASKS
                        and "-" not in k})
        raise ValueError(f"metric {metric!r} is in none of the runs; evaluation metrics "
                         f"found: {', '.join(known) or 'none (no evaluation ran)'}")
    rows = []
    for run in runs:
        row = {key: None for key, _ in SUMMARY_COLUMNS}
        row.update(run=run.name, metric=metric, iterations=run.last_iteration + 1,
                   max_iter=run.max_iter, evaluations=0)
        if TOTAL_LOSS in run.series:
            row["final_total_loss"] = _finite_or_none(run.series[TOTAL_LOSS][1][-1])
        if metric in run.series:
            its, values = run.series[metric]
            finite = np.flatnonzero(np.isfinite(values))
            row["evaluations"] = len(its)
            if len(finite):
                pick = np.argmax if mode == "max" else np.argmin
                best = int(finite[pick(values[finite])])
                row.update(best=float(values[best]), best_iteration=int(its[best]),
                           best_epoch=_epoch_of(run, int(its[best])),
                           final=_finite_or_none(values[-1]),
                           final_epoch=_epoch_of(run, int(its[-1])))
        rows.append(row)
    return rows


def _format(value, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.{digits}g}"


def _table_cells(rows: Sequence[Dict], digits: int) -> List[List[str]]:
    return [[_format(row[key], digits) if key not in ("run", "metric") else row[key]
             for key, _ in SUMMARY_COLUMNS] for row in rows]


def format_summary(rows: Sequence[Dict]) -> str:
    """The summary rows as a Markdown table (values to 4 significant digits)."""
    headers = [header for _, header in SUMMARY_COLUMNS]
    cells = [[cell.replace("|", "\\|") for cell in row] for row in _table_cells(rows, 4)]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths])]
                     + [line(r) for r in cells]) + "\n"


# --------------------------------------------------------------------------------------------
# Writing files
# --------------------------------------------------------------------------------------------
def _prepare_out_dir(out_dir) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(out_dir, "the output path exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temp_path)`` for a new file next to ``path`` (created with the usual
    permissions, unlike ``mkstemp``'s 0600), then move it into place."""
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_summary(rows: Sequence[Dict], out_dir) -> List[Path]:
    """Write ``summary.csv`` (values to 6 significant digits) and ``summary.md`` into
    ``out_dir`` (created if needed); returns their paths."""
    out_dir = _prepare_out_dir(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key for key, _ in SUMMARY_COLUMNS])
    writer.writerows(_table_cells(rows, 6))
    paths = [out_dir / "summary.csv", out_dir / "summary.md"]
    _write_text(paths[0], buffer.getvalue())
    _write_text(paths[1], format_summary(rows))
    return paths


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _save(fig: Figure, path: Path) -> Path:
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))
    return path


def run_colors(count: int) -> List:
    """One color per run (tab10, repeating after ten runs)."""
    palette = colormaps["tab10"].colors
    return [palette[i % len(palette)] for i in range(count)]


def smoothing_window(length: int, window: int = 20) -> int:
    """The moving-median window :func:`smooth` uses for a series of ``length`` points:
    ``window``, capped at a fifth of the series so that short runs keep their shape."""
    return min(window, max(1, length // 5))


def smooth(values: np.ndarray, window: int = 20) -> np.ndarray:
    """Centered moving median (NaN ignored) over :func:`smoothing_window` points; the window
    shrinks at the ends of the series."""
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
    """``loss.png``: total loss per iteration (raw faint, moving median bold), epochs on top."""
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
    """``loss_components.png``: a grid with one panel per ``loss_*`` key."""
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


def plot_lr(runs: Sequence[RunCurves], colors, path: Path) -> Optional[Path]:
    """``lr.png``: the learning rate per iteration (log scale when all rates are positive)."""
    with_lr = _runs_with(runs, "lr")
    if not with_lr:
        logger.warning(f"no lr in any run: {path.name} not written")
        return None
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.add_subplot()
    positive = True
    for run, color in zip(runs, colors):
        if "lr" in run.series:
            its, lr = run.series["lr"]
            positive &= bool(np.all(lr > 0))
            ax.plot(its, lr, color=color, linewidth=1.8, label=run.name,
                    marker="o" if len(its) == 1 else None)
    if positive:
        ax.set_yscale("log")
    note = _add_epoch_axis(ax, runs)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate" + (" (log scale)" if positive else ""))
    ax.set_title(_title("Learning rate schedule", note))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="run")
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
    each run's best ``metric`` when it is one of them."""
    names = ("AP", "AP50")
    tasks = [t for t in _EVAL_TASKS if any(f"{t}/{n}" in r.series for r in runs for n in names)]
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
    ``bbox/AP50-<class>`` (dashed) of each run; None when no run has per-class keys."""
    classes = _per_class_names(runs, "segm/AP50-") or _per_class_names(runs, "bbox/AP50-")
    if not classes:
        return None
    tasks = [t for t in _EVAL_TASKS if _per_class_names(runs, f"{t}/AP50-")]
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


def plot_runs(runs: Sequence[RunCurves], out_dir, metric: str = "segm/AP50", mode: str = "max",
              window: int = 20) -> List[Path]:
    """Write the figures of the runs into ``out_dir`` (created if needed).

    Writes ``loss.png``, ``loss_components.png``, ``lr.png``, ``ap.png`` and, when per-class
    keys exist, ``ap50_per_class.png``; a figure whose data no run has is skipped with a
    warning. Existing files of these names are replaced (atomically); nothing is deleted.

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
    out_dir = _prepare_out_dir(out_dir)
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
    ]
    return [p for p in written if p is not None]
