"""The sections of the run report (:mod:`.report`) about the run itself: the headline at the
top of the page and the run's timing and environment.

- Headline (:func:`headline_section`): the best-model metric (``TEST.BEST_METRIC``) at the
  last evaluation and at its best, the main COCO and pathology figures, how long the run
  trained and how fast, the device: what a reader looks for first.
- Timing (:func:`read_timing`): seconds per training iteration, the median of Detectron2's
  ``time`` in ``metrics.json`` (each logged value is already the median of its window), and
  per image (divided by ``SOLVER.IMS_PER_BATCH``); the data loader's share (``data_time``);
  from ``log.txt``, the last "Total training time" and the last evaluation's "Total inference
  time" (seconds per image: Detectron2 evaluates one image per iteration).
- Environment (:func:`read_environment`): the last "Environment info" table that Detectron2's
  ``default_setup`` wrote into ``log.txt`` (Python, PyTorch, Detectron2, torchvision, NumPy,
  GPUs), the config's device, and the training precision (``SOLVER.AMP``; on a CPU the
  dtype that ``SOLVER.AMP.CPU_DTYPE`` resolved to, as the trainer logged it). It is the
  environment of the training, not of whoever writes the report later.

What was not logged is shown as "not logged"; neither section is ever missing.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.run_files import LOG_FILE
from .curves import RunCurves
from .report_html import Section, paragraph, table
from .report_sections import config_value, format_metric

__all__ = [
    "ENVIRONMENT_KEYS",
    "Timing",
    "headline_section",
    "read_environment",
    "read_timing",
    "run_section",
]

NOT_LOGGED = "not logged"
# The rows of Detectron2's environment table the report shows, in this order.
ENVIRONMENT_KEYS = ("Python", "PyTorch", "detectron2", "torchvision", "numpy", "GPU available",
                    "CUDA_HOME", "sys.platform")
# A log record's start: "[12/03 07:49:03] <logger> <LEVEL>: ".
_RECORD = re.compile(r"^\[\d\d/\d\d \d\d:\d\d:\d\d\] \S+ (?:INFO|WARNING|ERROR|DEBUG): ")
_TRAINING_TIME = re.compile(r"Total training time: (\S+)")
_INFERENCE_TIME = re.compile(r"Total inference time: \S+ \(([0-9.]+) s / iter per device, "
                             r"on (\d+) devices?\)")
_PRECISION = re.compile(r"Mixed precision: (\S+) (.+)$")


@dataclass
class Timing:
    """How long a run took, from its ``metrics.json`` and ``log.txt``.

    Attributes:
        seconds_per_iter: median training iteration time (None: not logged).
        data_seconds_per_iter: median data-loading time per iteration (None: not logged).
        images_per_batch: ``SOLVER.IMS_PER_BATCH`` (None: unknown).
        training_time: the last "Total training time" of ``log.txt`` (``"0:12:34"``; "" if
            none).
        inference_seconds_per_image: the last evaluation's inference time per image (None:
            not logged).
        inference_devices: the devices that evaluation ran on.
    """

    seconds_per_iter: Optional[float] = None
    data_seconds_per_iter: Optional[float] = None
    images_per_batch: Optional[int] = None
    training_time: str = ""
    inference_seconds_per_image: Optional[float] = None
    inference_devices: int = 1

    @property
    def seconds_per_image(self) -> Optional[float]:
        """Training seconds per image (None: unknown)."""
        if self.seconds_per_iter is None or not self.images_per_batch:
            return None
        return self.seconds_per_iter / self.images_per_batch


@dataclass
class Environment:
    """The training's software and hardware, from ``log.txt`` and the config.

    Attributes:
        rows: ``(name, value)`` of Detectron2's environment table, :data:`ENVIRONMENT_KEYS`
            first, then any ``GPU <n>`` rows.
        device: ``MODEL.DEVICE``.
        precision: the training's dtype and why (``"float32 (AMP off)"``, ``"bfloat16:
            SOLVER.AMP.CPU_DTYPE auto, native (...)"``...).
        notes: what could not be read.
    """

    rows: List[Tuple[str, str]] = field(default_factory=list)
    device: str = ""
    precision: str = ""
    notes: List[str] = field(default_factory=list)


def _log_lines(run_dir: Path) -> Optional[List[str]]:
    path = run_dir / LOG_FILE
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _median(run: RunCurves, key: str) -> Optional[float]:
    if key not in run.series:
        return None
    values = run.series[key][1]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def read_timing(run_dir: Path, run: RunCurves, config: Optional[Dict]) -> Timing:
    """The run's timing (see the module docstring).

    Args:
        run_dir: the run folder.
        run: its curves (``metrics.json``).
        config: its ``config.yaml`` as a dict (None: unreadable).

    Returns:
        Timing: what was logged.
    """
    batch = config_value(config, "SOLVER.IMS_PER_BATCH") if config else None
    timing = Timing(_median(run, "time"), _median(run, "data_time"),
                    int(batch) if isinstance(batch, (int, float)) and batch > 0 else None)
    for line in _log_lines(run_dir) or []:
        found = _TRAINING_TIME.search(line)
        if found:
            timing.training_time = found.group(1)
        found = _INFERENCE_TIME.search(line)
        if found:
            timing.inference_seconds_per_image = float(found.group(1))
            timing.inference_devices = int(found.group(2))
    return timing


def _environment_table(lines: Sequence[str]) -> Dict[str, str]:
    """The rows of the last "Environment info:" table of a log."""
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith("Environment info:")
              and _RECORD.match(line)]
    rows: Dict[str, str] = {}
    if not starts:
        return rows
    for line in lines[starts[-1] + 1:]:
        if _RECORD.match(line):
            break
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2 and not set(parts[0]) <= {"-"}:
            rows.setdefault(parts[0], parts[1])
    return rows


def read_environment(run_dir: Path, config: Optional[Dict]) -> Environment:
    """The training's environment (see the module docstring).

    Args:
        run_dir: the run folder.
        config: its ``config.yaml`` as a dict (None: unreadable).

    Returns:
        Environment: what was logged.
    """
    environment = Environment()
    lines = _log_lines(run_dir)
    if lines is None:
        environment.notes.append(f"no {run_dir / LOG_FILE}: versions not logged")
        lines = []
    table_rows = _environment_table(lines)
    if lines and not table_rows:
        environment.notes.append(f"{run_dir / LOG_FILE} holds no Detectron2 environment table")
    for key in ENVIRONMENT_KEYS:
        if key in table_rows:
            environment.rows.append((key, table_rows[key]))
    environment.rows += [(k, v) for k, v in table_rows.items() if re.fullmatch(r"GPU \d+", k)]
    device = config_value(config, "MODEL.DEVICE") if config else None
    environment.device = str(device) if device else NOT_LOGGED
    amp = config_value(config, "SOLVER.AMP.ENABLED") if config else None
    logged = [m for m in map(_PRECISION.search, lines) if m and _RECORD.match(m.string)]
    if logged:
        environment.precision = logged[-1].group(2)
    elif amp is False:
        environment.precision = "float32 (SOLVER.AMP.ENABLED off)"
    else:
        environment.precision = NOT_LOGGED
    return environment


def _seconds(value: Optional[float], unit: str) -> str:
    if value is None or not math.isfinite(value):
        return NOT_LOGGED
    return f"{value:.3g} s/{unit}"


def _timing_rows(timing: Timing) -> List[Tuple[str, str]]:
    data_share = ""
    if timing.seconds_per_iter and timing.data_seconds_per_iter is not None:
        data_share = (f" ({100 * timing.data_seconds_per_iter / timing.seconds_per_iter:.0f}% "
                      "waiting for data)")
    per_image = timing.seconds_per_image
    devices = (f" on {timing.inference_devices} devices" if timing.inference_devices > 1
               else "")
    return [
        ("training time", timing.training_time or NOT_LOGGED),
        ("training, per iteration", _seconds(timing.seconds_per_iter, "iter") + data_share),
        ("training, per image", _seconds(per_image, "image")
         + (f" ({timing.images_per_batch} images per batch)" if per_image is not None else "")),
        ("inference, per image (last evaluation)",
         _seconds(timing.inference_seconds_per_image, "image") + devices),
    ]


def run_section(timing: Timing, environment: Environment, facts: Sequence[Tuple[str, str]]
                ) -> Section:
    """The run's facts (folder, iterations, evaluated dataset...), timing and environment.

    Args:
        timing: :func:`read_timing`.
        environment: :func:`read_environment`.
        facts: ``(item, value)`` rows shown first.
    """
    section = Section("run", "Run: timing and environment")
    section.notes.extend(environment.notes)
    section.body = (table(["item", "value"], list(facts), text_columns=2)
                    + "<h3>Timing</h3>"
                    + table(["", "value"], _timing_rows(timing), text_columns=2,
                            table_id="timing")
                    + "<h3>Environment of the training (from its log)</h3>"
                    + table(["", "value"], [("device", environment.device),
                                            ("precision", environment.precision),
                                            *environment.rows],
                            text_columns=2, table_id="environment"))
    return section


# The headline's metrics after the best-model metric, when logged.
_HEADLINE_KEYS = ("segm/AP", "segm/AP50", "bbox/AP50", "pathology/PQ", "pathology/mPQ",
                  "pathology/AJI", "pathology/F1")


def headline_section(metrics: Dict[str, float], evaluation: Optional[Dict[str, float]],
                     best_metric: str, best_line: str, dataset: Optional[str],
                     timing: Timing, environment: Environment) -> Section:
    """The top of the page: the best-model metric and the main figures of the last
    evaluation, the best evaluation, and how long and where the run trained.

    Args:
        metrics: the last evaluation's metrics without the dataset prefix.
        evaluation: the last evaluation's record (None: none logged).
        best_metric: ``TEST.BEST_METRIC`` (e.g. ``segm/AP50``).
        best_line: a sentence on the best evaluation ("" for none).
        dataset: the evaluated dataset.
        timing: :func:`read_timing`.
        environment: :func:`read_environment`.
    """
    section = Section("headline", "Headline")
    keys = [best_metric] + [k for k in _HEADLINE_KEYS if k != best_metric and k in metrics]
    if evaluation is None:
        section.notes.append("No evaluation logged yet: no metrics.")
    else:
        when = f"iteration {evaluation['iteration']}"
        epoch = evaluation.get("epoch")
        if epoch is not None and math.isfinite(epoch):
            when += f", epoch {epoch:g}"
        rows = [[key + (" (best-model metric)" if key == best_metric else ""),
                 format_metric(key, metrics.get(key))] for key in keys]
        attrs = [[None, {"data-key": key}] for key in keys]
        section.body += table([f"last evaluation ({dataset or 'evaluated set'}, {when})",
                               "value"], rows, attrs, text_columns=1, table_id="headline-metrics")
        if best_line:
            section.body += paragraph(best_line)
    per_image = timing.seconds_per_image
    facts = [f"trained {timing.training_time}" if timing.training_time else "",
             f"{timing.seconds_per_iter:.3g} s/iter" if timing.seconds_per_iter else "",
             f"{per_image:.3g} s/image" if per_image else "",
             (f"inference {timing.inference_seconds_per_image:.3g} s/image"
              if timing.inference_seconds_per_image is not None else ""),
             f"device {environment.device}" if environment.device != NOT_LOGGED else "",
             environment.precision.split(":")[0] if environment.precision != NOT_LOGGED else ""]
    line = ", ".join(f for f in facts if f)
    if line:
        section.body += paragraph(line[0].upper() + line[1:] + " (details: Run, below).")
    return section
