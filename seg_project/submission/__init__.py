"""The project's one writer and checker of grader submissions (``test-results.json``).

A submission is a JSON list with one entry per predicted instance::

    {"image_id": 1, "bbox": [x, y, w, h], "score": 0.93, "category_id": 2,
     "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"}}

The work is split by job; this module gathers the public names:

- :mod:`.entries`: the result entry's format (:data:`ENTRY_KEYS`), its one validator,
  :func:`load_result_entries` and :func:`detect_bbox_format` (shared with the evaluation and
  the pictures);
- :mod:`.file`: :func:`build_submission`, :func:`write_submission` (atomic JSON and
  zip), :func:`load_submission`, and the bounded reading both readers share (a zip holds one
  JSON file, no zip bomb is inflated, a list is parsed an entry at a time);
- :mod:`.check`: :func:`check_submission` (fields, RLE counts, bboxes; 100k
  entries in a few seconds, no mask decoded, memory bounded whatever the file's size);
- :mod:`.report`: :class:`SubmissionReport`, :func:`format_report`;
- :mod:`.bbox_format`: telling ``[x, y, w, h]`` from ``[x1, y1, x2, y2]`` bboxes.
"""

from .bbox_format import BBOX_FORMATS
from .check import COCO_MAX_DETS, check_submission
from .entries import ENTRY_KEYS, detect_bbox_format, load_result_entries
from .file import RESULTS_NAME, build_submission, load_submission, write_submission
from .report import SubmissionReport, format_report

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
    "detect_bbox_format",
    "format_report",
    "load_result_entries",
]
