"""The project's one writer and checker of grader submissions (``test-results.json``).

A submission is a JSON list with one entry per predicted instance::

    {"image_id": 1, "bbox": [x, y, w, h], "score": 0.93, "category_id": 2,
     "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"}}

``image_id`` comes from ``test_image_name_to_ids.json``, ``category_id`` is 1..K and the mask
is a pycocotools compressed RLE (counts as text) at the image's original size. ``bbox`` is
COCO's ``[x, y, w, h]`` by default; ``[x1, y1, x2, y2]`` (what the course staff's example
uses) is an option. The grader also takes a zip holding ``test-results.json``.

:func:`check_submission` reads every RLE's counts once, in a vectorized pass that proves it
decodes to exactly ``H * W`` pixels (pycocotools itself does not check this: a too-short
string decodes to uninitialized memory), then takes the masks' boxes from pycocotools
without decoding any mask: 100k entries take a few seconds.
"""

import json
import math
import operator
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from ..data.image_io import DatasetError
from ..data.reader import load_mapping
from ..data.rle import rle_to_text

__all__ = [
    "BBOX_FORMATS",
    "RESULTS_NAME",
    "SubmissionReport",
    "build_submission",
    "write_submission",
    "load_submission",
    "check_submission",
    "format_report",
]

BBOX_FORMATS = ("xywh", "xyxy")
RESULTS_NAME = "test-results.json"
ENTRY_KEYS = ("image_id", "bbox", "score", "category_id", "segmentation")
# COCOeval's default maxDets: only the best 100 entries of an image are scored.
COCO_MAX_DETS = 100

# A mask's tight box must lie within its bbox up to TOL_PX + TOL_FRAC * (mask extent), per
# axis; the bbox may not exceed the image by more than that either (errors). A bbox more than
# WILD_FACTOR * (mask extent) + WILD_PX wide or high does not fit its mask: it counts against
# that bbox format when telling xywh from xyxy, but is only a warning, since Mask R-CNN's
# mask of a low-score box can be much smaller than the box.
TOL_PX = 2.0
TOL_FRAC = 0.05
WILD_FACTOR = 8.0
WILD_PX = 32.0

# pycocotools' compressed counts: characters '0'..'o', 5 bits each, numbers of at most 6
# characters here (2500 x 2500 pixels need 5).
_MAX_NUMBER_CHARS = 6
_BBOX_OK, _BBOX_NEGATIVE, _BBOX_OUTSIDE, _BBOX_BEYOND, _BBOX_WILD = range(5)


# ----------------------------------------------------------------------------- building


def _check_bbox_format(bbox_format: str, allowed: Sequence[str] = BBOX_FORMATS) -> None:
    if bbox_format not in allowed:
        raise ValueError(f"bbox_format must be one of {', '.join(allowed)}, got {bbox_format!r}")


def _submission_entry(image_id: int, prediction: Mapping, bbox_format: str) -> Dict:
    x, y, w, h = (float(v) for v in prediction["bbox"])
    return {
        "image_id": image_id,
        "bbox": [x, y, x + w, y + h] if bbox_format == "xyxy" else [x, y, w, h],
        "score": float(prediction["score"]),
        "category_id": operator.index(prediction["category_id"]),
        "segmentation": rle_to_text(prediction["segmentation"]),
    }


def build_submission(
    predictions: Iterable[Tuple[int, Iterable[Mapping]]], bbox_format: str = "xywh"
) -> List[Dict]:
    """Turn per-image prediction entries into submission entries.

    Args:
        predictions: ``(image_id, entries)`` pairs; each entry is a COCO result dict without
            ``image_id``: ``bbox`` (XYWH), ``score``, ``category_id`` (1..K) and
            ``segmentation`` (compressed RLE; counts as str or bytes).
        bbox_format: ``"xywh"`` (COCO) or ``"xyxy"`` (``[x1, y1, x2, y2]``, as in the course
            staff's example).

    Returns:
        list[dict]: entries with keys in the order image_id, bbox, score, category_id,
        segmentation; plain Python ints and floats; counts as str.

    Raises:
        ValueError: unknown ``bbox_format`` or a malformed prediction (named by image id and
            position).
    """
    _check_bbox_format(bbox_format)
    entries = []
    for image_id, image_predictions in predictions:
        try:
            image_id = operator.index(image_id)
        except TypeError as e:
            raise ValueError(f"image_id must be an integer, got {image_id!r}") from e
        for position, prediction in enumerate(image_predictions):
            try:
                entries.append(_submission_entry(image_id, prediction, bbox_format))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"prediction {position} of image_id {image_id} is malformed "
                                 f"({type(e).__name__}: {e})") from e
    return entries


# ------------------------------------------------------------------------------ writing


def _new_file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_temp(path: Path, write: Callable) -> Path:
    """Write a temporary file beside ``path`` with ``write(file)``; remove it on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, _new_file_mode(path))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _write_zip(f, data: bytes) -> None:
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(RESULTS_NAME, data)


def write_submission(entries: Sequence[Mapping], out_path, zip_path=None) -> List[Path]:
    """Write submission entries as JSON, and optionally as a zip for the grader.

    Both files are written to temporary files beside their targets and then moved into
    place (``os.replace``), so a failure leaves any earlier file untouched and no partial
    file behind. An existing file at a target is replaced only once everything is written.

    Args:
        entries: submission entries (see :func:`build_submission`).
        out_path: the JSON file to write (usually ``.../test-results.json``).
        zip_path: optional zip to write, holding exactly ``test-results.json``.

    Returns:
        list[Path]: the written files, the JSON first.

    Raises:
        ValueError: an entry holds NaN or infinity (not valid JSON).
        TypeError: an entry holds a value JSON cannot encode (e.g. a numpy integer).
    """
    data = json.dumps(list(entries), separators=(",", ":"), allow_nan=False).encode("utf-8")
    targets = [(Path(out_path), lambda f: f.write(data))]
    if zip_path is not None:
        targets.append((Path(zip_path), lambda f: _write_zip(f, data)))
    temps = []
    try:
        for path, write in targets:
            temps.append(_write_temp(path, write))
        for (path, _), temp in zip(targets, temps):
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return [path for path, _ in targets]


# ------------------------------------------------------------------------------ reading


def load_submission(path) -> Any:
    """Read a submission file: ``.json``, or a ``.zip`` holding ``test-results.json``.

    Returns:
        The parsed JSON (normally a list; :func:`check_submission` checks the rest).

    Raises:
        DatasetError: missing or empty file, a zip without ``test-results.json`` at its top
            level, or text that is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "submission file not found")
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if RESULTS_NAME not in names:
                    nested = [n for n in names if n.rsplit("/", 1)[-1] == RESULTS_NAME]
                    where = f" (found {nested[0]}; it must be at the top level)" if nested else ""
                    raise DatasetError(path, f"zip holds no {RESULTS_NAME}{where}")
                raw = archive.read(RESULTS_NAME)
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(path, f"not a readable zip file: {e}") from e
    else:
        raw = path.read_bytes()
    if not raw.strip():
        raise DatasetError(path, "submission is empty")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"not valid JSON: {e}") from e


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


# ---------------------------------------------------------------------- counts checking


def _first_problem(problems: List[Optional[str]], rows: Iterable[int], text: str) -> None:
    for row in rows:
        if problems[row] is None:
            problems[row] = text


def _counts_problems(counts: Sequence[str], pixels: Sequence[int]) -> List[Optional[str]]:
    """Check compressed RLE counts strings without decoding any mask.

    Parses all strings at once the way pycocotools' ``rleFrString`` does (5-bit digits,
    ``0x20`` = more digits follow, ``0x10`` of the last digit = negative, runs after the
    third stored as differences to the run two before) and checks that every run is a
    non-negative 32-bit number and that the runs of each string add up to its pixel count.

    Args:
        counts: counts strings.
        pixels: ``height * width`` of each string's mask.

    Returns:
        list: ``None`` for a valid string, else what is wrong with it.
    """
    n = len(counts)
    problems: List[Optional[str]] = [None] * n
    texts = []
    for row, text in enumerate(counts):
        if not text.isascii():
            problems[row] = "counts holds characters outside the RLE alphabet '0'..'o'"
            text = ""
        texts.append(text)
    lengths = np.fromiter(map(len, texts), np.int64, n)
    _first_problem(problems, np.flatnonzero(lengths == 0), "counts is empty")
    digits = np.frombuffer("".join(texts).encode("ascii"), np.uint8).astype(np.int32) - 48
    if digits.size == 0:
        return problems
    char_starts = np.cumsum(lengths) - lengths
    wrong = np.flatnonzero((digits < 0) | (digits > 63))
    if wrong.size:
        _first_problem(problems, np.unique(np.searchsorted(char_starts, wrong, "right") - 1),
                       "counts holds characters outside the RLE alphabet '0'..'o'")
    number_end = (digits & 0x20) == 0
    last_chars = (char_starts + lengths)[lengths > 0] - 1
    _first_problem(problems, np.flatnonzero(lengths > 0)[~number_end[last_chars]],
                   "counts ends in the middle of a number (truncated)")
    number_end[last_chars] = True  # numbers never run across strings
    ends = np.flatnonzero(number_end)
    starts = np.concatenate(([0], ends[:-1] + 1))
    value_owner = np.searchsorted(char_starts, starts, "right") - 1
    num_chars = ends - starts + 1
    _first_problem(problems, np.unique(value_owner[num_chars > _MAX_NUMBER_CHARS]),
                   f"counts holds a number longer than {_MAX_NUMBER_CHARS} characters")
    runs = _undo_differences(_number_values(digits, starts, num_chars), value_owner, n)
    _first_problem(problems, np.unique(value_owner[(runs < 0) | (runs >= 2**32)]),
                   "counts decode to a negative or oversized run length")
    has_runs = lengths > 0
    totals = np.zeros(n, np.int64)
    totals[has_runs] = np.add.reduceat(runs, np.searchsorted(value_owner,
                                                             np.flatnonzero(has_runs)))
    for row in np.flatnonzero(has_runs & (totals != np.asarray(pixels, np.int64))):
        _first_problem(problems, [row], f"counts decode to {totals[row]} pixels, but the "
                                        f"segmentation size has {pixels[row]}")
    return problems


def _number_values(digits: np.ndarray, starts: np.ndarray, num_chars: np.ndarray) -> np.ndarray:
    """The signed numbers of ``num_chars`` 5-bit digits (little end first) from ``starts``."""
    num_chars = np.minimum(num_chars, _MAX_NUMBER_CHARS)
    values = np.zeros(starts.size, np.int64)
    for k in range(int(num_chars.max())):
        longer = np.flatnonzero(num_chars > k)
        values[longer] |= (digits[starts[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = (digits[starts + num_chars - 1] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * num_chars[negative])
    return values


def _undo_differences(values: np.ndarray, value_owner: np.ndarray, n: int) -> np.ndarray:
    """Runs from the stored numbers: run j (j > 2) is stored as run j - run (j - 2).

    So runs 1, 3, 5, ... of a string are the running sums of its stored numbers 1, 3, 5, ...
    and runs 2, 4, ... those of its numbers 2, 4, ...; computed for all strings at once.
    """
    first = np.searchsorted(value_owner, np.arange(n))[value_owner]
    index = np.arange(values.size) - first
    odd = (index & 1).astype(bool)
    runs = values.copy()
    for chain in (odd, ~odd & (index >= 2)):
        sums = np.cumsum(np.where(chain, values, 0))
        # A string's first number is in neither chain: the sum there is all before it.
        runs[chain] = (sums - sums[first])[chain]
    return runs


# ------------------------------------------------------------------------ bbox checking


def _bbox_fit(given: np.ndarray, mask_xywh: np.ndarray, image_hw: np.ndarray,
              bbox_format: str) -> Tuple[np.ndarray, np.ndarray]:
    """Compare each bbox, read in ``bbox_format``, with its mask's tight box.

    Args:
        given: ``(N, 4)`` bboxes as submitted.
        mask_xywh: ``(N, 4)`` tight boxes of the (non-empty) masks, XYWH in whole pixels.
        image_hw: ``(N, 2)`` image heights and widths.
        bbox_format: how to read ``given``.

    Returns:
        tuple: ``(codes, iou)``: one of the ``_BBOX_*`` codes per bbox, and its IoU with the
        mask's box (0 for a box of negative size).
    """
    x1, y1 = given[:, 0], given[:, 1]
    if bbox_format == "xywh":
        x2, y2 = x1 + given[:, 2], y1 + given[:, 3]
    else:
        x2, y2 = given[:, 2], given[:, 3]
    mx1, my1, mw, mh = mask_xywh.T
    overlap = (np.clip(np.minimum(x2, mx1 + mw) - np.maximum(x1, mx1), 0, None)
               * np.clip(np.minimum(y2, my1 + mh) - np.maximum(y1, my1), 0, None))
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    iou = overlap / np.maximum(area + mw * mh - overlap, 1e-9)
    tol_x, tol_y = TOL_PX + TOL_FRAC * mw, TOL_PX + TOL_FRAC * mh
    codes = np.full(len(given), _BBOX_OK, np.int8)
    codes[(x2 - x1 > WILD_FACTOR * mw + WILD_PX) | (y2 - y1 > WILD_FACTOR * mh + WILD_PX)] = \
        _BBOX_WILD
    codes[(x1 < -tol_x) | (y1 < -tol_y) | (x2 > image_hw[:, 1] + tol_x)
          | (y2 > image_hw[:, 0] + tol_y)] = _BBOX_BEYOND
    codes[(x1 > mx1 + tol_x) | (y1 > my1 + tol_y) | (x2 < mx1 + mw - tol_x)
          | (y2 < my1 + mh - tol_y)] = _BBOX_OUTSIDE
    codes[(x2 < x1) | (y2 < y1)] = _BBOX_NEGATIVE
    return codes, iou


def _bbox_message(code: int, bbox: Sequence[float], mask_xywh, image_hw, fmt: str) -> str:
    given = "[" + ", ".join(f"{v:.1f}" for v in bbox) + f"] (read as {fmt})"
    x, y, w, h = (int(v) for v in mask_xywh)
    mask_span = f"its mask spans x {x}..{x + w}, y {y}..{y + h}"
    if code == _BBOX_NEGATIVE:
        return f"bbox {given} has a negative width or height"
    if code == _BBOX_OUTSIDE:
        return f"bbox {given} does not contain its mask: {mask_span}"
    if code == _BBOX_BEYOND:
        return (f"bbox {given} reaches beyond the {int(image_hw[0])}x{int(image_hw[1])} image "
                f"({mask_span})")
    raise ValueError(f"no message for bbox code {code}")


def _choose_format(requested: str, fit: Dict[str, Tuple[np.ndarray, np.ndarray]]
                   ) -> Tuple[str, str, str]:
    """Pick the bbox format: for "auto", the one more masks fit, then the one whose boxes
    match the masks' boxes better (mean IoU), then xywh.

    Args:
        requested: "auto", "xywh" or "xyxy".
        fit: :func:`_bbox_fit`'s answer for each format.

    Returns:
        tuple: the format, how it was chosen, and a warning (or "") when a requested format
        is not the one "auto" would pick.
    """
    total = len(fit["xywh"][0])
    if total == 0:
        return (requested if requested != "auto" else "xywh",
                "no valid non-empty mask with a valid bbox to compare with", "")
    rank = {fmt: (int(np.count_nonzero(codes == _BBOX_OK)), float(iou.mean()))
            for fmt, (codes, iou) in fit.items()}
    evidence = (f"{rank['xyxy'][0]} of {total} non-empty masks fit xyxy (mean IoU "
                f"{rank['xyxy'][1]:.2f}), {rank['xywh'][0]} fit xywh ({rank['xywh'][1]:.2f})")
    best = "xyxy" if rank["xyxy"] > rank["xywh"] else "xywh"
    if requested == "auto":
        return best, f"auto: {evidence}", ""
    hint = ""
    if best != requested:
        hint = (f"the boxes look like {best} rather than {requested} ({evidence}); check with "
                f"bbox_format={best!r} (--bbox-format {best}) if that is meant")
    return requested, f"as requested; {evidence}", hint


# ------------------------------------------------------------------------------ report


@dataclass
class SubmissionReport:
    """What :func:`check_submission` found.

    Attributes:
        source: the file checked, or ``"<entries>"``.
        num_entries: entries in the submission.
        errors: problems the grader would choke on or that make the result wrong; each
            names the entry index and image id.
        warnings: suspicious but acceptable things (empty masks, ignored keys, ...).
        entries_per_image: entries per mapped image id (0 for images without any).
        entries_per_class: entries per category id 1..K.
        images_without_entries: mapped image ids with no entry.
        bbox_format: ``"xywh"`` or ``"xyxy"``: the format used to check boxes.
        bbox_format_note: how it was chosen and how many masks fit each format.
    """

    source: str
    num_entries: int = 0
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    entries_per_image: Dict[int, int] = field(default_factory=dict)
    entries_per_class: Dict[int, int] = field(default_factory=dict)
    images_without_entries: List[int] = field(default_factory=list)
    bbox_format: Optional[str] = None
    bbox_format_note: str = ""

    @property
    def ok(self) -> bool:
        """True when the submission has no errors."""
        return not self.errors


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
                                              _counts_problems(self.counts, pixels)):
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
                     requested: str) -> Tuple[str, str, str]:
        """Compare bboxes with mask boxes; return :func:`_choose_format`'s answer."""
        usable = [i for i, row in enumerate(mask_rows) if row in self.bboxes]
        rows = [mask_rows[i] for i in usable]
        given = np.asarray([self.bboxes[row] for row in rows], np.float64).reshape(-1, 4)
        boxes = mask_boxes[usable]
        image_hw = np.asarray([self.sizes[self.entries[row]["image_id"]] for row in rows],
                              np.float64).reshape(-1, 2)
        fit = {fmt: _bbox_fit(given, boxes, image_hw, fmt) for fmt in BBOX_FORMATS}
        chosen, note, hint = _choose_format(requested, fit)
        codes = fit[chosen][0]
        self.wild_rows = [rows[i] for i in np.flatnonzero(codes == _BBOX_WILD)]
        for i in np.flatnonzero((codes != _BBOX_OK) & (codes != _BBOX_WILD)):
            self.problems.setdefault(rows[i], []).append(
                _bbox_message(int(codes[i]), given[i], boxes[i], image_hw[i], chosen))
        return chosen, note, hint


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
    _check_bbox_format(bbox_format, BBOX_FORMATS + ("auto",))
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
    report.bbox_format, report.bbox_format_note, format_hint = checker.check_bboxes(
        mask_rows, mask_boxes, bbox_format)
    report.errors = [f"{_where(i, entries[i])}: {p}" for i in sorted(checker.problems)
                     for p in checker.problems[i]]
    report.entries_per_image, report.entries_per_class = checker.per_image, checker.per_class
    report.images_without_entries = [i for i, n in report.entries_per_image.items() if n == 0]
    if report.images_without_entries:
        message = (f"{len(report.images_without_entries)} of {len(sizes)} images have no entry: "
                   f"ids {_examples([str(i) for i in report.images_without_entries], 20)}")
        (report.errors if require_all_images else report.warnings).append(message)
    report.warnings += _summary_warnings(checker, empty_rows, report.entries_per_image,
                                         format_hint)
    return report


# ---------------------------------------------------------------------------- formatting


def _listing(title: str, lines: Sequence[str], limit: int) -> List[str]:
    if not lines:
        return []
    out = [f"{title} ({len(lines)}):"] + [f"  - {line}" for line in lines[:limit]]
    if len(lines) > limit:
        out.append(f"  ... and {len(lines) - limit} more")
    return out


def _wrapped(items: Sequence[str], per_line: int = 10, limit: int = 120) -> List[str]:
    lines = ["  " + "  ".join(items[i:i + per_line])
             for i in range(0, min(len(items), limit), per_line)]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return lines


def format_report(report: SubmissionReport, max_listed: int = 20) -> str:
    """A readable summary: verdict, errors, warnings, then counts per class and image.

    Args:
        report: what :func:`check_submission` returned.
        max_listed: how many errors and warnings to list before "... and N more".
    """
    num_errors = len(report.errors)
    verdict = "VALID" if report.ok else f"INVALID ({num_errors} error{'s' * (num_errors > 1)})"
    per_image = report.entries_per_image
    with_entries = sum(1 for n in per_image.values() if n)
    lines = [
        f"Submission {report.source}: {verdict}",
        f"entries: {report.num_entries} for {with_entries} of {len(per_image)} images",
    ]
    if report.bbox_format:
        lines.append(f"bbox format: {report.bbox_format} ({report.bbox_format_note})")
    lines += _listing("errors", report.errors, max_listed)
    lines += _listing("warnings", report.warnings, max_listed)
    if report.entries_per_class:
        lines.append("entries per class: " + ", ".join(
            f"{c}: {n}" for c, n in report.entries_per_class.items()))
    if per_image:
        counts = sorted(per_image.values())
        lines.append(f"entries per image (min {counts[0]}, median {counts[len(counts) // 2]}, "
                     f"max {counts[-1]}), image_id:count:")
        lines += _wrapped([f"{i}:{n}" for i, n in per_image.items()])
    return "\n".join(lines)
