"""A table of training runs: best and final value of a metric per run, as Markdown and CSV."""

import csv
import io
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tabulate import tabulate

from ..utils.atomic_files import prepare_out_dir, write_text
from .curves import EVAL_TASKS, TOTAL_LOSS, RunCurves

__all__ = ["SUMMARY_COLUMNS", "format_summary", "summarize_runs", "write_summary"]

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
        known = sorted({k for run in runs for k in run.series if k.split("/")[0] in EVAL_TASKS
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
    """The summary rows as a Markdown table (values to 4 significant digits, left-aligned).

    Args:
        rows: :func:`summarize_runs`'s rows.

    Returns:
        str: the table (``tabulate``'s ``pipe`` format), ending with a newline.
    """
    headers = [header for _, header in SUMMARY_COLUMNS]
    cells = [[cell.replace("|", "\\|") for cell in row] for row in _table_cells(rows, 4)]
    return tabulate(cells, headers, tablefmt="pipe", disable_numparse=True) + "\n"


def write_summary(rows: Sequence[Dict], out_dir) -> List[Path]:
    """Write ``summary.csv`` (values to 6 significant digits) and ``summary.md``.

    Args:
        rows: :func:`summarize_runs`'s rows.
        out_dir: the folder to write into (created if needed).

    Returns:
        list[Path]: the CSV and the Markdown file.
    """
    out_dir = prepare_out_dir(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key for key, _ in SUMMARY_COLUMNS])
    writer.writerows(_table_cells(rows, 6))
    paths = [out_dir / "summary.csv", out_dir / "summary.md"]
    write_text(paths[0], buffer.getvalue())
    write_text(paths[1], format_summary(rows))
    return paths
