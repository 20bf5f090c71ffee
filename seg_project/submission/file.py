"""The submission file (``test-results.json``): entries built from predictions, written, read.

A submission is a JSON list with one entry per predicted instance::

    {"image_id": 1, "bbox": [x, y, w, h], "score": 0.93, "category_id": 2,
     "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"}}

``image_id`` comes from ``test_image_name_to_ids.json``, ``category_id`` is 1..K and the mask
is a pycocotools compressed RLE (counts as text) at the image's original size. ``bbox`` is
COCO's ``[x, y, w, h]`` by default; ``[x1, y1, x2, y2]`` (what the course staff's example
uses) is an option. The grader also takes a zip holding ``test-results.json``.
"""

import json
import operator
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from ..data.image_io import DatasetError
from ..data.rle import rle_to_text
from ..utils.atomic_files import atomic_write_many
from .bbox_format import check_bbox_format

__all__ = [
    "RESULTS_NAME",
    "build_submission",
    "load_submission",
    "write_submission",
]

RESULTS_NAME = "test-results.json"


# ----------------------------------------------------------------------------- building


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
    check_bbox_format(bbox_format)
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


def _write_zip(path: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(RESULTS_NAME, data)


def write_submission(entries: Sequence[Mapping], out_path, zip_path=None) -> List[Path]:
    """Write submission entries as JSON, and optionally as a zip for the grader.

    Both files are written to temporary files beside their targets, and only once both are
    complete moved into place (``os.replace``, the JSON first; see
    :func:`seg_project.utils.atomic_files.atomic_write_many`): a failure while writing leaves
    any earlier files untouched, one between the two moves leaves a new JSON beside an
    earlier zip, and no partial file is ever left.

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
    targets = [(out_path, lambda temp: Path(temp).write_bytes(data))]
    if zip_path is not None:
        targets.append((zip_path, lambda temp: _write_zip(temp, data)))
    return atomic_write_many(targets)


# ------------------------------------------------------------------------------ reading


def load_submission(path, what: str = "submission file") -> Any:
    """Read a submission file: ``.json``, or a ``.zip`` holding ``test-results.json``.

    Args:
        path: the file.
        what: how to name the file in errors.

    Returns:
        The parsed JSON (normally a list; :func:`check_submission` checks the rest, and
        :func:`seg_project.submission.entries.load_result_entries` the entries' fields).

    Raises:
        DatasetError: missing or empty file, a zip without ``test-results.json`` at its top
            level, or text that is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, f"{what} not found")
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
        raise DatasetError(path, f"{what} is empty")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"not valid JSON: {e}") from e
