"""Training curves of Detectron2 runs: ``metrics.json`` (+ ``config.yaml``) read into series.

A run is a Detectron2 output folder holding ``metrics.json`` (Detectron2's ``JSONWriter``: one
JSON object per line with ``"iteration"`` and scalars) and, optionally, ``config.yaml``. A
resumed run appends to the same file, so an iteration may appear again later: the last
occurrence of a key at an iteration wins and every series is sorted by iteration. Blank and
unreadable lines (the truncated last line of a killed run) are skipped with a warning.

The epoch length comes from ``SOLVER.ITERS_PER_EPOCH`` of ``config.yaml`` (or ``MAX_ITER /
EPOCHS``), else from the ``"epoch"`` values of ``metrics.json``; with neither it is unknown
and figures use iterations (:mod:`seg_project.analysis.plots`).
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import read_config_dict
from ..utils.errors import DatasetError
from ..utils.paths import require_file
from ..utils.run_files import CONFIG_FILE, METRICS_FILE
from ..utils.values import is_number

__all__ = [
    "EVAL_TASKS",
    "RunCurves",
    "Series",
    "TOTAL_LOSS",
    "load_run",
    "load_runs",
    "read_metrics",
    "read_run_config",
]

logger = logging.getLogger(__name__)

TOTAL_LOSS = "total_loss"
# The evaluation tasks whose metrics are plotted and summarized ("segm/AP50", "bbox/AP", ...).
EVAL_TASKS = ("segm", "bbox")

Series = Tuple[np.ndarray, np.ndarray]


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
        """Epochs completed after some iterations.

        Args:
            iterations: iteration numbers (0-based).

        Returns:
            ``(iteration + 1) / iters_per_epoch`` per iteration, or None when the epoch
            length is unknown.
        """
        if not self.iters_per_epoch:
            return None
        return (np.asarray(iterations, dtype=np.float64) + 1.0) / self.iters_per_epoch

    @property
    def last_iteration(self) -> int:
        """The highest iteration of any series."""
        return max(int(its[-1]) for its, _ in self.series.values())

    def keys_with_prefix(self, prefix: str) -> List[str]:
        """The series keys that start with ``prefix``, in the order they were first seen.

        Args:
            prefix: e.g. ``"loss_"``.
        """
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
    require_file(path)
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
            if is_number(value):
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
    cfg = read_config_dict(path)
    solver = cfg.get("SOLVER") or {}
    if not isinstance(solver, dict):
        raise DatasetError(path, "SOLVER is not a mapping")
    return {key: solver[key] for key in ("ITERS_PER_EPOCH", "MAX_ITER", "EPOCHS")
            if is_number(solver.get(key)) and solver[key] > 0}


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
