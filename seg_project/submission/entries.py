"""The result entry, one predicted instance: its format, its validation, reading files of
entries, and reading their bboxes against their masks.

The project's interchange format is COCO's result entry; a grader submission
(``test-results.json``) and the evaluator's ``coco_instances_results.json`` are JSON lists of
them::

    {"image_id": 1, "bbox": [x, y, w, h], "score": 0.93, "category_id": 2,
     "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"}}

``bbox`` may also be ``[x1, y1, x2, y2]`` (the course staff's example);
:func:`detect_bbox_format` tells which from how the boxes fit the masks.

This module is the one home of these jobs for the submission checker, the evaluation and the
pictures: :func:`entry_problems` validates an entry's fields (the checker lists everything it
finds and adds the grader's own rules; the readers stop at the first problem),
:func:`load_result_entries` reads a results file and validates every entry, and
:func:`measure_bboxes` reads the masks' boxes from their RLE counts (without decoding any
mask) beside the bboxes, and :func:`detect_bbox_format` tells the bboxes' format from them.
"""

import logging
from dataclasses import dataclass
from typing import Container, Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from ..data.image_io import DatasetError
from ..data.rle import mask_boxes
from ..utils.values import is_finite_number, is_int
from .bbox_format import choose_bbox_format
from .file import load_submission

__all__ = [
    "ENTRY_KEYS",
    "RESULT_KEYS",
    "BoxMeasure",
    "EntryProblems",
    "detect_bbox_format",
    "entry_problems",
    "load_result_entries",
    "measure_bboxes",
]

logger = logging.getLogger(__name__)

# The keys of a submission entry, in the order the writer puts them.
ENTRY_KEYS = ("image_id", "bbox", "score", "category_id", "segmentation")
# The keys every entry of a results file needs; it also needs a bbox or a segmentation.
RESULT_KEYS = ("image_id", "category_id", "score")
# The fields :class:`EntryProblems` names, in the order their problems are listed ("size" and
# "counts" are the segmentation's).
FIELDS = ("entry", "image_id", "category_id", "score", "bbox", "segmentation", "size", "counts")


def _show(value) -> str:
    """A value and its type, cut to about 40 characters, for a problem's message."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


@dataclass
class EntryProblems:
    """What :func:`entry_problems` found wrong with a result entry.

    Attributes:
        missing: the required keys the entry lacks.
        fields: per field of :data:`FIELDS` (``"entry"`` when it is not an object at all)
            what is wrong with its value.
    """

    missing: List[str]
    fields: Dict[str, str]

    def messages(self, more: Optional[Mapping[str, str]] = None) -> List[str]:
        """Every problem: the missing keys first, then the fields' problems in the order of
        :data:`FIELDS`.

        Args:
            more: further problems by field (e.g. the grader's rules), for fields whose value
                passed :func:`entry_problems`.
        """
        if not (self.missing or self.fields or more):
            return []
        more = more or {}
        found = [f"missing key(s): {', '.join(self.missing)}"] if self.missing else []
        return found + [self.fields.get(key) or more[key] for key in FIELDS
                        if key in self.fields or key in more]

    def first(self) -> Optional[str]:
        """The first problem (a missing key named alone), or None if there is none."""
        if self.missing:
            return f"{self.missing[0]} is missing"
        if not self.fields:
            return None
        return next(self.fields[key] for key in FIELDS if key in self.fields)


def _value_problem(key: str, value) -> Optional[str]:
    """What is wrong with the value of ``image_id``, ``category_id``, ``score`` or ``bbox``."""
    if key in ("image_id", "category_id"):
        return None if is_int(value) else f"{key} must be an integer, got {_show(value)}"
    if key == "score":
        return None if is_finite_number(value) else \
            f"score must be a finite number, got {_show(value)}"
    return _bbox_problem(value)


def _bbox_problem(bbox) -> Optional[str]:
    if (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(map(is_finite_number, bbox))):
        return None
    return f"bbox must be a list of 4 finite numbers, got {_show(bbox)}"


def _segmentation_problems(segmentation) -> Dict[str, str]:
    """Problems of a segmentation's structure, ``size`` and ``counts``, by field."""
    if not (isinstance(segmentation, dict) and "size" in segmentation
            and "counts" in segmentation):
        return {"segmentation": 'segmentation must be an object with "size" and "counts", got '
                                f"{_show(segmentation)}"}
    problems = {}
    size, counts = segmentation["size"], segmentation["counts"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(map(is_int, size))):
        problems["size"] = ("segmentation size must be [height, width] integers, got "
                            f"{_show(size)}")
    if not isinstance(counts, str) and not (isinstance(counts, list)  # uncompressed
                                            and all(map(is_int, counts))):
        problems["counts"] = ("segmentation counts must be a compressed RLE string, got "
                              f"{_show(counts)}")
    return problems


def entry_problems(entry, required: Sequence[str] = ENTRY_KEYS) -> EntryProblems:
    """Check the fields of a result entry against the format (not against any image or class).

    ``image_id`` and ``category_id`` must be integers, ``score`` a finite number, ``bbox``
    four finite numbers and ``segmentation`` an RLE ``{"size": [H, W], "counts": ...}`` with
    integer sizes and counts as a compressed string (or, as COCO allows, a list of integers).

    Args:
        entry: the entry (normally a dict read from JSON).
        required: keys that must be there; any other key of :data:`ENTRY_KEYS` may be missing
            or null, but an entry without ``bbox`` and ``segmentation`` has a problem.

    Returns:
        EntryProblems: the missing keys and the fields' problems (both empty if none).
    """
    if not isinstance(entry, dict):
        return EntryProblems([], {"entry": "must be an object with keys "
                                           f"{', '.join(ENTRY_KEYS)}, got {_show(entry)}"})
    missing, fields = [], {}
    for key in ENTRY_KEYS:
        if key not in entry or (entry[key] is None and key not in required):
            if key in required:
                missing.append(key)
            continue
        if key == "segmentation":
            fields.update(_segmentation_problems(entry[key]))
        elif problem := _value_problem(key, entry[key]):
            fields[key] = problem
    if ("bbox" not in required and "segmentation" not in required
            and entry.get("bbox") is None and entry.get("segmentation") is None):
        fields["segmentation"] = "has neither segmentation nor bbox"
    return EntryProblems(missing, fields)


def load_result_entries(path) -> List[Dict]:
    """Read a results file and check every entry's fields (:func:`entry_problems`).

    Args:
        path: a JSON list of result entries (``test-results.json``,
            ``coco_instances_results.json``), or a zip holding ``test-results.json``. Each entry
            needs the :data:`RESULT_KEYS` and a bbox and/or a segmentation.

    Returns:
        list[dict]: the entries, as read.

    Raises:
        DatasetError: an unreadable file, or naming the first bad entry.
    """
    entries = load_submission(path, what="results file")
    if not isinstance(entries, list):
        raise DatasetError(path, "must be a JSON list of result entries")
    for index, entry in enumerate(entries):
        problem = entry_problems(entry, RESULT_KEYS).first()
        if problem:
            raise DatasetError(path, f"entry {index}: {problem}: {str(entry)[:200]}")
    return entries


# --------------------------------------------------------------------- bboxes and masks


class BoxMeasure(NamedTuple):
    """The masks' boxes of some entries, beside their bboxes (:func:`measure_bboxes`).

    Attributes:
        mask_problems: ``{row: what is wrong with its RLE counts}`` for unreadable masks.
        empty: rows whose masks are readable and empty.
        rows: the rows to compare: a readable non-empty mask and a valid bbox.
        given: ``(len(rows), 4)`` their bboxes, as given.
        mask_xywh: ``(len(rows), 4)`` their masks' tight XYWH boxes.
        image_hw: ``(len(rows), 2)`` their masks' heights and widths.
    """

    mask_problems: Dict[int, str]
    empty: List[int]
    rows: List[int]
    given: np.ndarray
    mask_xywh: np.ndarray
    image_hw: np.ndarray


def measure_bboxes(entries: Sequence[Mapping], rows: Sequence[int],
                   valid_bboxes: Optional[Container[int]] = None) -> BoxMeasure:
    """Read the masks of some entries for their boxes, without decoding any mask.

    The counts are checked first (:func:`seg_project.data.rle.mask_boxes`; pycocotools,
    which gives the boxes, reads corrupt counts without a word).

    Args:
        entries: result entries.
        rows: the entries whose ``segmentation`` is a compressed RLE (counts a string) of a
            valid size, to read.
        valid_bboxes: the rows known to have a valid bbox (default: checked here).

    Returns:
        BoxMeasure: the unreadable and the empty masks, and the boxes of the others.
    """
    rles = [entries[row]["segmentation"] for row in rows]
    problems, boxes = mask_boxes(rles)
    if valid_bboxes is None:
        valid_bboxes = {row for row in rows if _bbox_problem(entries[row].get("bbox")) is None}
    compared = [i for i, (row, problem) in enumerate(zip(rows, problems))
                if problem is None and row in valid_bboxes and boxes[i, 2] > 0]
    return BoxMeasure(
        mask_problems={row: p for row, p in zip(rows, problems) if p is not None},
        empty=[row for row, p, box in zip(rows, problems, boxes) if p is None and box[2] <= 0],
        rows=[rows[i] for i in compared],
        given=np.asarray([entries[rows[i]]["bbox"] for i in compared],
                         np.float64).reshape(-1, 4),
        mask_xywh=boxes[compared].reshape(-1, 4),
        image_hw=np.asarray([rles[i]["size"] for i in compared], np.float64).reshape(-1, 2),
    )


def detect_bbox_format(entries: Sequence[Mapping]) -> str:
    """Tell whether the entries' ``bbox`` is ``[x, y, w, h]`` (COCO) or ``[x1, y1, x2, y2]``.

    Each box is read both ways and compared with the bounding box of its entry's mask, as the
    submission checker does (:func:`measure_bboxes`, then
    :func:`seg_project.submission.bbox_format.choose_bbox_format`): the reading more masks fit
    wins, then the one matching them better. Without a readable non-empty mask nothing tells
    them apart: XYWH (the COCO format) is assumed, with a warning unless a box whose third or
    fourth value is below the first or second shows it is XYWH.

    Args:
        entries: result entries (checked or not: those without a valid bbox or a compressed
            RLE of a valid size are passed over).

    Returns:
        str: ``"xywh"`` or ``"xyxy"``.
    """
    with_masks = [row for row, entry in enumerate(entries) if isinstance(entry, dict)
                  and isinstance(entry.get("segmentation"), dict)
                  and not _segmentation_problems(entry["segmentation"])
                  and isinstance(entry["segmentation"]["counts"], str)]
    measure = measure_bboxes(entries, with_masks)
    if measure.rows:
        return choose_bbox_format(measure.given, measure.mask_xywh,
                                  measure.image_hw).bbox_format
    boxes = np.asarray([entry["bbox"] for entry in entries if isinstance(entry, dict)
                        and _bbox_problem(entry.get("bbox")) is None],
                       np.float64).reshape(-1, 4)
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        return "xywh"
    if len(boxes):
        logger.warning("bbox format: no masks to compare the boxes with; assuming COCO's "
                       "[x, y, w, h] (pass bbox_format='xyxy' for [x1, y1, x2, y2])")
    return "xywh"
