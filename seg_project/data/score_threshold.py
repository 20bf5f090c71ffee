"""Which detections count as cells: the score threshold of every output that shows "the
cells" (pathology metrics, label TIFF and GeoJSON exports, pictures, run report), and the
run's operating point it comes from.

The submission (``test-results.json``) keeps its own low threshold
(``MODEL.ROI_HEADS.SCORE_THRESH_TEST``): AP wants every detection.

Precedence (:func:`resolve_score_threshold`), the first that is set wins:

1. an explicit value: a tool's flag (``--score-threshold`` of ``visualize.py``,
   ``report.py`` and ``export.py``, ``--export-threshold`` of ``predict.py``,
   ``--pathology-threshold`` of ``evaluate.py``);
2. ``TEST.PATHOLOGY.SCORE_THRESHOLD`` when it is 0 or more (its default, -1, means "not set");
3. ``TEST.OPERATING_POINT.SCORE_THRESHOLD`` when it is 0 or more: the operating point
   recorded in a run's ``config.yaml``;
4. the ``operating_point.json`` beside the weights (or in the run folder);
5. :data:`DEFAULT_SCORE_THRESHOLD`, 0.5.

``operating_point.json`` (written by :mod:`seg_project.evaluation.operating_point`, read
here)::

    {"score_threshold": 0.35, "criterion": "PQ", "dataset": "cells_val",
     "results_file": ".../inference/cells_val/coco_instances_results.json",
     "overlap_rule": {"min_visible_fraction": 0.5, "max_mask_iou": 1.0},
     "grid": [{"score_threshold": 0.05, "PQ": ..., "DQ": ..., "SQ": ..., ...}, ...]}
"""

import json
import math
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

from ..utils.errors import DatasetError
from ..utils.run_files import OPERATING_POINT_FILE
from ..utils.values import config_value

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "ScoreThreshold",
    "operating_point_path",
    "read_operating_point",
    "resolve_score_threshold",
    "write_operating_point",
]

# The threshold when nothing else says one.
DEFAULT_SCORE_THRESHOLD = 0.5


class ScoreThreshold(NamedTuple):
    """A resolved threshold: its ``value`` and where it came from (``source``, for logs and
    the notes of tables)."""

    value: float
    source: str

    def describe(self) -> str:
        """``"score >= 0.35 (operating point chosen on cells_val)"``."""
        return f"score >= {self.value:g} ({self.source})"


def operating_point_path(weights_or_dir) -> Optional[Path]:
    """``operating_point.json`` of a run folder, or beside a weights file; None for a model
    zoo or web address (no run folder)."""
    text = str(weights_or_dir or "")
    if not text or "://" in text:
        return None
    path = Path(text)
    return (path if path.is_dir() else path.parent) / OPERATING_POINT_FILE


def _checked_threshold(value: Any, where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DatasetError(where, f"score_threshold must be a number in [0, 1], got {value!r}")
    return float(value)


def read_operating_point(weights_or_dir) -> Optional[Dict[str, Any]]:
    """The operating point stored beside a weights file (or in a run folder), or None when
    there is none.

    Returns:
        dict or None: the file's content, its ``score_threshold`` checked.

    Raises:
        DatasetError: a file that is not JSON, not an object, or whose threshold is not a
            number in [0, 1].
    """
    path = operating_point_path(weights_or_dir)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"is not a readable operating point (JSON: {e})") from None
    if not isinstance(data, dict) or "score_threshold" not in data:
        raise DatasetError(path, "is not an operating point (no score_threshold)")
    data["score_threshold"] = _checked_threshold(data["score_threshold"], path)
    return data


def write_operating_point(run_dir, data: Dict[str, Any]) -> Path:
    """Write ``operating_point.json`` into a run folder (atomically); returns its path.

    Raises:
        DatasetError: a threshold that is not a number in [0, 1].
    """
    from ..utils.atomic_files import write_text

    path = Path(run_dir) / OPERATING_POINT_FILE
    _checked_threshold(data.get("score_threshold"), path)
    return write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def _set(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def resolve_score_threshold(explicit: Optional[float] = None, cfg=None,
                            weights_or_dir=None, flag: str = "flag") -> ScoreThreshold:
    """The score threshold of the cells, by the precedence of the module docstring.

    Args:
        explicit: a value given on the command line (None: not given).
        cfg: the config (a CfgNode, or a run's ``config.yaml`` as a dict); None: none.
        weights_or_dir: the weights file or run folder whose ``operating_point.json`` is
            looked for; None: not looked for.
        flag: how the explicit value is named in :attr:`ScoreThreshold.source`.

    Returns:
        ScoreThreshold: the value and where it came from.

    Raises:
        DatasetError: an unreadable ``operating_point.json``.
        ValueError: an explicit value or config value outside [0, 1].
    """
    candidates = [(explicit, flag)]
    if cfg is not None:
        candidates += [(config_value(cfg, "TEST.PATHOLOGY.SCORE_THRESHOLD"),
                        "TEST.PATHOLOGY.SCORE_THRESHOLD")]
        chosen_on = config_value(cfg, "TEST.OPERATING_POINT.DATASET") or "data"
        candidates += [(config_value(cfg, "TEST.OPERATING_POINT.SCORE_THRESHOLD"),
                        f"operating point chosen on {chosen_on}")]
    for value, source in candidates:
        if value is not None and _set(value):
            if value > 1:
                raise ValueError(f"{source}: a score threshold must lie in [0, 1], got {value}")
            return ScoreThreshold(float(value), source)
        if value is not None and source == flag:
            raise ValueError(f"{flag}: a score threshold must lie in [0, 1], got {value}")
    if weights_or_dir is not None:
        point = read_operating_point(weights_or_dir)
        if point is not None:
            return ScoreThreshold(point["score_threshold"], "operating point chosen on "
                                  f"{point.get('dataset') or 'data'}, "
                                  f"{operating_point_path(weights_or_dir)}")
    return ScoreThreshold(DEFAULT_SCORE_THRESHOLD, "default: no operating point")
