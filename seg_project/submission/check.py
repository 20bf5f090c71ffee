"""The submission checker: reads a submission the way the grader will, and reports.

:func:`check_submission` checks every entry's fields against the result-entry format
(:func:`.entries.entry_problems`) and the grader's rules (ids in the mapping file, classes
1..K, scores in [0, 1], masks of the image's size as compressed RLE strings), then reads every
RLE's counts once, proving each decodes to exactly ``H * W`` pixels, takes the masks' boxes
from pycocotools without decoding any mask and compares them with the bboxes
(:func:`.entries.measure_bboxes`): 100k entries take a few seconds.
"""

import itertools
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..data.reader import load_mapping
from ..utils.values import is_int
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
from .entries import ENTRY_KEYS, entry_problems, measure_bboxes
from .file import JsonListReader, open_submission
from .report import SubmissionReport

__all__ = ["COCO_MAX_DETS", "check_submission"]

# COCOeval's default maxDets: only the best 100 entries of an image are scored.
COCO_MAX_DETS = 100
# Where the image ids and sizes come from, as the messages say by default.
MAPPING_FILE = "the mapping file"
# Entries checked at a time (memory: one chunk of entries as Python objects).
_CHUNK_ENTRIES = 20_000


def _image_sizes(mapping) -> Dict[int, Tuple[int, int]]:
    if isinstance(mapping, (str, os.PathLike)):
        mapping = load_mapping(mapping)
    if isinstance(mapping, Mapping):
        return {int(k): (int(v[0]), int(v[1])) for k, v in mapping.items()}
    return {entry["id"]: (entry["height"], entry["width"]) for entry in mapping}


def _grader_problems(entry: dict, fields: Mapping[str, str], sizes: Mapping,
                     num_classes: int, sizes_from: str = MAPPING_FILE
                     ) -> Tuple[Dict[str, str], Optional[Tuple[int, int]]]:
    """The grader's rules beyond the format, for the fields whose values passed it
    (``sizes_from``: what the image sizes come from, for the messages).

    Returns:
        tuple: the problems by field, and the image's (H, W) if its id is in the mapping.
    """
    problems: Dict[str, str] = {}
    image_size = None
    if "image_id" in entry and "image_id" not in fields:
        image_size = sizes.get(entry["image_id"])
        if image_size is None:
            problems["image_id"] = f"image_id {entry['image_id']} is not in {sizes_from}"
    category = entry.get("category_id")
    if "category_id" in entry and "category_id" not in fields and \
            not 1 <= category <= num_classes:
        problems["category_id"] = f"category_id {category} is outside 1..{num_classes}"
    score = entry.get("score")
    if "score" in entry and "score" not in fields and not 0.0 <= score <= 1.0:
        problems["score"] = f"score {score} is outside [0, 1]"
    if "segmentation" in entry and "segmentation" not in fields:
        size, counts = entry["segmentation"]["size"], entry["segmentation"]["counts"]
        if "size" not in fields and image_size is not None and tuple(size) != image_size:
            problems["size"] = (f"segmentation size {list(size)} differs from the image's size "
                                f"[{image_size[0]}, {image_size[1]}] in {sizes_from}")
        if "counts" not in fields and not isinstance(counts, str):
            problems["counts"] = ("segmentation counts must be a compressed RLE string, got an "
                                  "uncompressed RLE")
    return problems, image_size


# ------------------------------------------------------------------------------ checking


def _where(index: int, entry) -> str:
    if isinstance(entry, dict) and "image_id" in entry:
        return f"entry {index} (image_id {entry['image_id']!r})"
    return f"entry {index} (no image_id)"


def _labelled(rows: Sequence[Tuple[int, int]]) -> str:
    """The first few ``(row, image_id)`` pairs as ``entry N (image_id M)``, and how many more
    there are."""
    return _examples([f"entry {row} (image_id {image_id})" for row, image_id in rows[:5]],
                     total=len(rows))


def _entries(count: int) -> str:
    return f"{count} entry has" if count == 1 else f"{count} entries have"


def _examples(items: Sequence[str], limit: int = 5, total: Optional[int] = None) -> str:
    """The first ``limit`` of ``items``, and how many more of ``total`` (default all) there
    are."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({total - limit} more)" if total > limit else "")


class _Checker:
    """Checks entries a chunk at a time; keeps per entry only what the report needs (problems,
    and the compact boxes of the entries whose bboxes are compared with their masks)."""

    def __init__(self, sizes: Mapping, num_classes: int, sizes_from: str = MAPPING_FILE):
        self.sizes = sizes
        self.num_classes = num_classes
        self.sizes_from = sizes_from
        self.num_entries = 0
        self.problems: Dict[int, List[str]] = {}
        self.labels: Dict[int, str] = {}  # "entry N (image_id ...)" of rows with problems
        self.extra_keys: Dict[str, int] = {}
        self.empty: List[Tuple[int, int]] = []  # (row, image_id) of empty masks (a warning)
        self.wild: List[Tuple[int, int]] = []  # bboxes far larger than their masks (a warning)
        self.per_image = {image_id: 0 for image_id in sorted(sizes)}
        self.per_class = {category: 0 for category in range(1, num_classes + 1)}
        # entries per (image, category): the grader scores the best COCO_MAX_DETS of each
        self.per_image_class: Dict[Tuple[int, int], int] = {}
        # per chunk: the rows compared, their image ids, bboxes, mask boxes and image sizes
        self._compared: List[Tuple[np.ndarray, ...]] = []

    def _add(self, row: int, label: str, problems: Sequence[str]) -> None:
        if problems:
            self.labels.setdefault(row, label)
            self.problems.setdefault(row, []).extend(problems)

    def check(self, entries: Iterable) -> None:
        """Check every entry of ``entries`` (any iterable: a file is read as it goes)."""
        iterator = iter(entries)
        while True:
            chunk = list(itertools.islice(iterator, _CHUNK_ENTRIES))
            if not chunk:
                return
            self._check_chunk(chunk)
            self.num_entries += len(chunk)

    def _check_chunk(self, chunk: Sequence) -> None:
        first = self.num_entries
        mask_rows, bbox_rows = self._check_fields(first, chunk)
        measure = measure_bboxes(chunk, mask_rows, bbox_rows)
        for row, problem in measure.mask_problems.items():
            self._add(first + row, _where(first + row, chunk[row]), [f"segmentation {problem}"])
        self.empty += [(first + row, chunk[row]["image_id"]) for row in measure.empty]
        self._compared.append((np.asarray(measure.rows, np.int64) + first,
                               np.asarray([chunk[row]["image_id"] for row in measure.rows],
                                          np.int64),
                               measure.given, measure.mask_xywh, measure.image_hw))

    def _check_fields(self, first: int, chunk: Sequence) -> Tuple[List[int], set]:
        """Check each entry's keys and values; count entries per image and class.

        Returns:
            tuple: the rows (of ``chunk``) whose masks are worth reading, and those with a
            valid bbox.
        """
        keys = set(ENTRY_KEYS)
        mask_rows, bbox_rows = [], set()
        for index, entry in enumerate(chunk):
            found = entry_problems(entry)
            if not isinstance(entry, dict):
                self._add(first + index, _where(first + index, entry), found.messages())
                continue
            if entry.keys() != keys:
                for key in entry.keys() - keys:
                    self.extra_keys[key] = self.extra_keys.get(key, 0) + 1
            rules, image_size = _grader_problems(entry, found.fields, self.sizes,
                                                 self.num_classes, self.sizes_from)
            if image_size is not None:
                self.per_image[entry["image_id"]] += 1
                if "segmentation" in entry and not {"segmentation", "size", "counts"} & (
                        found.fields.keys() | rules.keys()):
                    mask_rows.append(index)
            if "bbox" in entry and "bbox" not in found.fields:
                bbox_rows.add(index)
            category = entry.get("category_id")
            if is_int(category) and category in self.per_class:
                self.per_class[category] += 1
                if image_size is not None:
                    key = (entry["image_id"], category)
                    self.per_image_class[key] = self.per_image_class.get(key, 0) + 1
            self._add(first + index, _where(first + index, entry), found.messages(rules))
        return mask_rows, bbox_rows

    def compare_bboxes(self, requested: str) -> FormatChoice:
        """Compare the bboxes with their masks' boxes, once every entry is checked; return
        the format choice of :func:`.bbox_format.choose_bbox_format`."""
        rows, image_ids, given, mask_xywh, image_hw = (
            np.concatenate(parts) for parts in zip(*self._compared)) if self._compared else (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros((0, 4)),
            np.zeros((0, 2)))
        self._compared = []
        choice = choose_bbox_format(given, mask_xywh, image_hw, requested)
        codes = choice.codes
        self.wild = [(int(rows[i]), int(image_ids[i])) for i in np.flatnonzero(codes == FIT_WILD)]
        for i in np.flatnonzero((codes != FIT_OK) & (codes != FIT_WILD)):
            row = int(rows[i])
            self._add(row, f"entry {row} (image_id {int(image_ids[i])})", [
                bbox_message(int(codes[i]), given[i], mask_xywh[i], image_hw[i],
                             choice.bbox_format)])
        return choice

    def errors(self) -> List[str]:
        """Every problem, as ``entry N (image_id ...): problem``, by entry."""
        return [f"{self.labels[row]}: {problem}" for row in sorted(self.problems)
                for problem in self.problems[row]]


def _summary_warnings(checker: _Checker, format_hint: str) -> List[str]:
    warnings = []
    if checker.empty:
        warnings.append(f"{_entries(len(checker.empty))} an empty mask (area 0): "
                        + _labelled(checker.empty))
    if checker.wild:
        warnings.append(f"{_entries(len(checker.wild))} a bbox far larger than its "
                        f"mask (a side over {WILD_FACTOR:g}x the mask's + {WILD_PX:g} px; "
                        "harmless for mask scoring): " + _labelled(checker.wild))
    if checker.extra_keys:
        keys = ", ".join(f"{k!r} ({n}x)" for k, n in sorted(checker.extra_keys.items()))
        warnings.append(f"entries hold keys the grader ignores: {keys}")
    crowded = {k: n for k, n in checker.per_image_class.items() if n > COCO_MAX_DETS}
    if crowded:
        images = len({image_id for image_id, _ in crowded})
        uncounted = sum(n - COCO_MAX_DETS for n in crowded.values())
        warnings.append(f"{len(crowded)} (image, category) pairs in {images} images have more "
                        f"than {COCO_MAX_DETS} entries (up to {max(crowded.values())}); the "
                        f"grader's COCOeval (default maxDets={COCO_MAX_DETS}) scores only the "
                        f"{COCO_MAX_DETS} highest-scoring entries of each image and category: "
                        f"{uncounted} entries will not count")
    if format_hint:
        warnings.append(format_hint)
    return warnings


def check_submission(entries_or_path, mapping, num_classes: int, bbox_format: str = "auto",
                     require_all_images: bool = False,
                     sizes_from: str = MAPPING_FILE) -> SubmissionReport:
    """Check a submission the way the grader will read it, without decoding any mask.

    A file is read one entry at a time (:class:`.file.JsonListReader`) and checked a chunk of
    entries at a time, so memory stays bounded (0.45 GB for a 300 MB submission of 1.2
    million entries) whatever the file's size.

    Args:
        entries_or_path: the entries (a list), or a path to a ``.json`` file or to a ``.zip``
            holding ``test-results.json``.
        mapping: path to ``test_image_name_to_ids.json``, the list :func:`load_mapping`
            returns, or a dict ``{image_id: (height, width)}``.
        num_classes: K; category ids must be 1..K.
        bbox_format: ``"xywh"``, ``"xyxy"`` or ``"auto"``: the reading more masks fit, then
            the one whose boxes match the masks' boxes better (mean IoU), then xywh.
        require_all_images: make an image without any entry an error (else a warning).
        sizes_from: what ``mapping`` is, as the messages name it (e.g. the ground truth an
            evaluation scores against).

    Returns:
        SubmissionReport: errors name the entry index and image id.

    Raises:
        DatasetError: the submission or mapping file is missing or unreadable (a zip beyond
            the size bounds or with several JSON files included, see
            :func:`.file.open_submission`).
        ValueError: ``num_classes`` below 1 or an unknown ``bbox_format``.
    """
    check_bbox_format(bbox_format, BBOX_FORMATS + ("auto",))
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    sizes = _image_sizes(mapping)
    checker = _Checker(sizes, num_classes, sizes_from)
    if isinstance(entries_or_path, (str, os.PathLike)):
        report = SubmissionReport(source=str(entries_or_path))
        with open_submission(entries_or_path) as stream:
            reader = JsonListReader(stream, entries_or_path)
            if reader.top_level != "list":
                return _not_a_list(report, reader.top_level)
            checker.check(reader)
    else:
        report = SubmissionReport(source="<entries>")
        if not isinstance(entries_or_path, list):
            return _not_a_list(report, type(entries_or_path).__name__)
        checker.check(entries_or_path)
    report.num_entries = checker.num_entries
    choice = checker.compare_bboxes(bbox_format)
    report.bbox_format, report.bbox_format_note = choice.bbox_format, choice.note
    report.errors = checker.errors()
    report.entries_per_image, report.entries_per_class = checker.per_image, checker.per_class
    report.images_without_entries = [i for i, n in report.entries_per_image.items() if n == 0]
    if report.images_without_entries:
        message = (f"{len(report.images_without_entries)} of {len(sizes)} images have no entry: "
                   f"ids {_examples([str(i) for i in report.images_without_entries], 20)}")
        (report.errors if require_all_images else report.warnings).append(message)
    report.warnings += _summary_warnings(checker, choice.hint)
    return report


def _not_a_list(report: SubmissionReport, type_name: str) -> SubmissionReport:
    report.errors.append(f"top level must be a JSON list of entries, got {type_name}")
    return report
