"""The submission checker: reads a submission the way the grader will, and reports.

:func:`check_submission` checks every entry's fields, reads every RLE's counts once, in a
vectorized pass that proves it decodes to exactly ``H * W`` pixels
(:func:`seg_project.data.rle.counts_problems`; pycocotools itself does not check this: a
too-short string decodes to uninitialized memory), then takes the masks' boxes from
pycocotools without decoding any mask and compares them with the bboxes
(:mod:`.bbox_format`): 100k entries take a few seconds.
"""

import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from ..data.reader import load_mapping
from ..data.rle import counts_problems
from .bbox_format import (
    BBOX_FORMATS,
    FIT_OK,
    FIT_WILD,
    WILD_FACTOR,
    WILD_PX,
    FormatChoice,
    bbox_message,
    check_bbox_format,
    choose_bbox_format,
)
from .submission_file import ENTRY_KEYS, load_submission
from .submission_report import SubmissionReport

__all__ = ["COCO_MAX_DETS", "check_submission"]

# COCOeval's default maxDets: only the best 100 entries of an image are scored.
COCO_MAX_DETS = 100


def _image_sizes(mapping) -> Dict[int, Tuple[int, int]]:
    if isinstance(mapping, (str, os.PathLike)):
        mapping = load_mapping(mapping)
    if isinstance(mapping, Mapping):
        return {int(k): (int(v[0]), int(v[1])) for k, v in mapping.items()}
    return {entry["id"]: (entry["height"], entry["width"]) for entry in mapping}


# ----------------------------------------------------------------------- entry fields


def _is_int(value) -> bool:
    """A JSON integer: a Python int, not a bool (nor a numpy integer, which JSON can't write)."""
    return type(value) is int


def _is_finite_number(value) -> bool:
    """An int or a finite float (numpy floats are floats), not a bool."""
    return type(value) is int or (isinstance(value, float) and math.isfinite(value))


def _show(value) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def _check_ids(entry: Mapping, sizes: Mapping, num_classes: int, problems: List[str]):
    """Check image_id and category_id; return the image's (H, W) if its id is known."""
    image_size = None
    if "image_id" in entry:
        image_id = entry["image_id"]
        if not _is_int(image_id):
            problems.append(f"image_id must be an integer, got {_show(image_id)}")
        elif image_id not in sizes:
            problems.append(f"image_id {image_id} is not in the mapping file")
        else:
            image_size = sizes[image_id]
    if "category_id" in entry:
        category = entry["category_id"]
        if not _is_int(category):
            problems.append(f"category_id must be an integer, got {_show(category)}")
        elif not 1 <= category <= num_classes:
            problems.append(f"category_id {category} is outside 1..{num_classes}")
    return image_size


def _check_score_and_bbox(entry: Mapping, problems: List[str]) -> Optional[List[float]]:
    """Check score and bbox types; return the bbox if it is four finite numbers."""
    if "score" in entry:
        score = entry["score"]
        if not _is_finite_number(score):
            problems.append(f"score must be a finite number, got {_show(score)}")
        elif not 0.0 <= score <= 1.0:
            problems.append(f"score {score} is outside [0, 1]")
    if "bbox" not in entry:
        return None
    bbox = entry["bbox"]
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(map(_is_finite_number, bbox))):
        problems.append(f"bbox must be a list of 4 finite numbers, got {_show(bbox)}")
        return None
    return [float(v) for v in bbox]


def _check_segmentation(entry: Mapping, image_size, problems: List[str]) -> Optional[str]:
    """Check the segmentation's structure and size; return its counts if worth decoding."""
    if "segmentation" not in entry:
        return None
    seg = entry["segmentation"]
    if not isinstance(seg, dict) or not {"size", "counts"} <= set(seg):
        problems.append('segmentation must be an object with "size" and "counts", got '
                        f"{_show(seg)}")
        return None
    size, counts = seg["size"], seg["counts"]
    size_ok = isinstance(size, (list, tuple)) and len(size) == 2 and all(map(_is_int, size))
    if not size_ok:
        problems.append(f"segmentation size must be [height, width] integers, got {_show(size)}")
    elif image_size is not None and tuple(size) != tuple(image_size):
        problems.append(f"segmentation size {list(size)} differs from the image's size "
                        f"[{image_size[0]}, {image_size[1]}] in the mapping file")
        size_ok = False
    if not isinstance(counts, str):
        kind = "an uncompressed RLE" if isinstance(counts, list) else _show(counts)
        problems.append(f"segmentation counts must be a compressed RLE string, got {kind}")
        return None
    return counts if size_ok and image_size is not None else None


# ------------------------------------------------------------------------------ checking


def _where(index: int, entry) -> str:
    if isinstance(entry, dict) and "image_id" in entry:
        return f"entry {index} (image_id {entry['image_id']!r})"
    return f"entry {index} (no image_id)"


def _entries(count: int) -> str:
    return f"{count} entry has" if count == 1 else f"{count} entries have"


def _examples(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


class _Checker:
    """Collects per-entry problems and the columns for the vectorized mask and bbox checks."""

    def __init__(self, entries: Sequence, sizes: Mapping, num_classes: int):
        self.entries = entries
        self.sizes = sizes
        self.num_classes = num_classes
        self.problems: Dict[int, List[str]] = {}
        self.rows: List[int] = []  # entries whose counts are worth decoding
        self.counts: List[str] = []
        self.row_sizes: List[Tuple[int, int]] = []
        self.bboxes: Dict[int, List[float]] = {}
        self.extra_keys: Dict[str, int] = {}
        self.wild_rows: List[int] = []  # bboxes far larger than their masks (a warning)
        self.per_image = {image_id: 0 for image_id in sorted(sizes)}
        self.per_class = {category: 0 for category in range(1, num_classes + 1)}

    def check_fields(self) -> None:
        """Check each entry's keys and values; count entries per image and class."""
        keys = set(ENTRY_KEYS)
        for index, entry in enumerate(self.entries):
            problems: List[str] = []
            if not isinstance(entry, dict):
                problems.append(f"must be an object with keys {', '.join(ENTRY_KEYS)}, got "
                                f"{_show(entry)}")
                self.problems[index] = problems
                continue
            if entry.keys() != keys:
                self._note_keys(entry, keys, problems)
            image_size = _check_ids(entry, self.sizes, self.num_classes, problems)
            bbox = _check_score_and_bbox(entry, problems)
            counts = _check_segmentation(entry, image_size, problems)
            if image_size is not None:
                self.per_image[entry["image_id"]] += 1
            category = entry.get("category_id")
            if _is_int(category) and category in self.per_class:
                self.per_class[category] += 1
            if bbox is not None:
                self.bboxes[index] = bbox
            if counts is not None:
                self.rows.append(index)
                self.counts.append(counts)
                self.row_sizes.append(image_size)
            if problems:
                self.problems[index] = problems

    def _note_keys(self, entry: dict, keys: set, problems: List[str]) -> None:
        missing = [key for key in ENTRY_KEYS if key not in entry]
        if missing:
            problems.append(f"missing key(s): {', '.join(missing)}")
        for key in entry.keys() - keys:
            self.extra_keys[key] = self.extra_keys.get(key, 0) + 1

    def check_masks(self) -> Tuple[List[int], np.ndarray, List[int]]:
        """Validate counts; return (rows with non-empty masks, their xywh boxes, empty rows)."""
        pixels = [h * w for h, w in self.row_sizes]
        valid_rows, rles = [], []
        for row, counts, size, problem in zip(self.rows, self.counts, self.row_sizes,
                                              counts_problems(self.counts, pixels)):
            if problem is not None:
                self.problems.setdefault(row, []).append(f"segmentation {problem}")
            else:
                valid_rows.append(row)
                rles.append({"size": size, "counts": counts})
        if not rles:
            return [], np.zeros((0, 4)), []
        # toBbox gives [0, 0, 0, 0] for an empty mask. (mask_util.area would do as well, but
        # pycocotools 2.0.11 with numpy 2 fails on lists of more than 255 RLEs.)
        boxes = np.asarray(mask_util.toBbox(rles), dtype=np.float64).reshape(-1, 4)
        keep = boxes[:, 2] > 0
        rows = np.asarray(valid_rows)
        return rows[keep].tolist(), boxes[keep], rows[~keep].tolist()

    def check_bboxes(self, mask_rows: List[int], mask_boxes: np.ndarray,
                     requested: str) -> FormatChoice:
        """Compare bboxes with mask boxes; return :func:`choose_bbox_format`'s answer."""
        usable = [i for i, row in enumerate(mask_rows) if row in self.bboxes]
        rows = [mask_rows[i] for i in usable]
        given = np.asarray([self.bboxes[row] for row in rows], np.float64).reshape(-1, 4)
        boxes = mask_boxes[usable]
        image_hw = np.asarray([self.sizes[self.entries[row]["image_id"]] for row in rows],
                              np.float64).reshape(-1, 2)
        choice = choose_bbox_format(given, boxes, image_hw, requested)
        codes = choice.codes
        self.wild_rows = [rows[i] for i in np.flatnonzero(codes == FIT_WILD)]
        for i in np.flatnonzero((codes != FIT_OK) & (codes != FIT_WILD)):
            self.problems.setdefault(rows[i], []).append(
                bbox_message(int(codes[i]), given[i], boxes[i], image_hw[i], choice.bbox_format))
        return choice


def _summary_warnings(checker: _Checker, empty_rows: List[int], per_image: Dict[int, int],
                      format_hint: str) -> List[str]:
    warnings = []
    entries = checker.entries
    if empty_rows:
        warnings.append(f"{_entries(len(empty_rows))} an empty mask (area 0): "
                        + _examples([_where(row, entries[row]) for row in empty_rows]))
    if checker.wild_rows:
        warnings.append(f"{_entries(len(checker.wild_rows))} a bbox far larger than its "
                        f"mask (a side over {WILD_FACTOR:g}x the mask's + {WILD_PX:g} px; "
                        "harmless for mask scoring): "
                        + _examples([_where(row, entries[row]) for row in checker.wild_rows]))
    if checker.extra_keys:
        keys = ", ".join(f"{k!r} ({n}x)" for k, n in sorted(checker.extra_keys.items()))
        warnings.append(f"entries hold keys the grader ignores: {keys}")
    crowded = {i: n for i, n in per_image.items() if n > COCO_MAX_DETS}
    if crowded:
        warnings.append(f"{len(crowded)} images have more than {COCO_MAX_DETS} entries (up to "
                        f"{max(crowded.values())}); COCOeval with its default maxDets="
                        f"{COCO_MAX_DETS} scores only the {COCO_MAX_DETS} highest-scoring "
                        "entries of an image")
    if format_hint:
        warnings.append(format_hint)
    return warnings


def check_submission(entries_or_path, mapping, num_classes: int, bbox_format: str = "auto",
                     require_all_images: bool = False) -> SubmissionReport:
    """Check a submission the way the grader will read it, without decoding any mask.

    Args:
        entries_or_path: the entries (a list), or a path to a ``.json`` file or to a ``.zip``
            holding ``test-results.json``.
        mapping: path to ``test_image_name_to_ids.json``, the list :func:`load_mapping`
            returns, or a dict ``{image_id: (height, width)}``.
        num_classes: K; category ids must be 1..K.
        bbox_format: ``"xywh"``, ``"xyxy"`` or ``"auto"``: the reading more masks fit, then
            the one whose boxes match the masks' boxes better (mean IoU), then xywh.
        require_all_images: make an image without any entry an error (else a warning).

    Returns:
        SubmissionReport: errors name the entry index and image id.

    Raises:
        DatasetError: the submission or mapping file is missing or unreadable.
        ValueError: ``num_classes`` below 1 or an unknown ``bbox_format``.
    """
    check_bbox_format(bbox_format, BBOX_FORMATS + ("auto",))
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    sizes = _image_sizes(mapping)
    if isinstance(entries_or_path, (str, os.PathLike)):
        source, entries = str(entries_or_path), load_submission(entries_or_path)
    else:
        source, entries = "<entries>", entries_or_path
    report = SubmissionReport(source=source)
    if not isinstance(entries, list):
        report.errors.append(f"top level must be a JSON list of entries, got "
                             f"{type(entries).__name__}")
        return report
    report.num_entries = len(entries)
    checker = _Checker(entries, sizes, num_classes)
    checker.check_fields()
    mask_rows, mask_boxes, empty_rows = checker.check_masks()
    choice = checker.check_bboxes(mask_rows, mask_boxes, bbox_format)
    report.bbox_format, report.bbox_format_note = choice.bbox_format, choice.note
    report.errors = [f"{_where(i, entries[i])}: {p}" for i in sorted(checker.problems)
                     for p in checker.problems[i]]
    report.entries_per_image, report.entries_per_class = checker.per_image, checker.per_class
    report.images_without_entries = [i for i, n in report.entries_per_image.items() if n == 0]
    if report.images_without_entries:
        message = (f"{len(report.images_without_entries)} of {len(sizes)} images have no entry: "
                   f"ids {_examples([str(i) for i in report.images_without_entries], 20)}")
        (report.errors if require_all_images else report.warnings).append(message)
    report.warnings += _summary_warnings(checker, empty_rows, report.entries_per_image,
                                         choice.hint)
    return report
