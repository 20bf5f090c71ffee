"""The project's one writer and checker of grader submissions (``test-results.json``).

A submission is a JSON list with one entry per predicted instance::

    {"image_id": 1, "bbox": [x, y, w, h], "score": 0.93, "category_id": 2,
     "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"}}

The work is split by job; this module gathers the public names:

- :mod:`.submission_file`: :func:`build_submission`, :func:`write_submission` (atomic JSON and
  zip), :func:`load_submission`;
- :mod:`.submission_check`: :func:`check_submission` (fields, RLE counts, bboxes; 100k
  entries in a few seconds, no mask decoded);
- :mod:`.submission_report`: :class:`SubmissionReport`, :func:`format_report`;
- :mod:`.bbox_format`: telling ``[x, y, w, h]`` from ``[x1, y1, x2, y2]`` bboxes.
"""

from .bbox_format import BBOX_FORMATS
from .submission_check import COCO_MAX_DETS, check_submission
from .submission_file import (
    ENTRY_KEYS,
    RESULTS_NAME,
    build_submission,
    load_submission,
    write_submission,
)
from .submission_report import SubmissionReport, format_report

__all__ = [
    "BBOX_FORMATS",
    "COCO_MAX_DETS",
    "ENTRY_KEYS",
    "RESULTS_NAME",
    "SubmissionReport",
    "build_submission",
    "write_submission",
    "load_submission",
    "check_submission",
    "format_report",
]
