"""The submission file (``test-results.json``): entries built from predictions, written, read.

A submission is a JSON list with one entry per predicted instance::

    {"image_id": 1, "bbox": [x, y, w, h], "score": 0.93, "category_id": 2,
     "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"}}

``image_id`` comes from ``test_image_name_to_ids.json``, ``category_id`` is 1..K and the mask
is a pycocotools compressed RLE (counts as text) at the image's original size. ``bbox`` is
COCO's ``[x, y, w, h]`` by default; ``[x1, y1, x2, y2]`` (what the course staff's example
uses) is an option. The grader also takes a zip holding ``test-results.json``.
"""

import codecs
import contextlib
import json
import operator
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

from ..data.image_io import DatasetError
from ..data.rle import rle_to_text
from ..utils.atomic_files import atomic_write_many
from .bbox_format import check_bbox_format

__all__ = [
    "MAX_UNZIPPED_BYTES",
    "MAX_ZIP_RATIO",
    "RESULTS_NAME",
    "JsonListReader",
    "build_submission",
    "load_submission",
    "open_submission",
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

# A zip member is inflated only if it declares at most this many bytes and at most this many
# times its compressed size (JSON of RLE masks compresses about 3 to 5 times; a zip bomb
# hundreds of times). zipfile reads no further than the declared size and then checks the
# CRC: a member that inflates beyond it is an unreadable zip.
MAX_UNZIPPED_BYTES = 1 << 30
MAX_ZIP_RATIO = 100
# Compressed members smaller than this are not held to MAX_ZIP_RATIO (they inflate to little).
_RATIO_FREE_BYTES = 1 << 20
# Bytes read at a time when streaming.
_READ_BYTES = 1 << 20


def _zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    """The zip's one JSON member, ``test-results.json`` at its top level, within the bounds."""
    jsons = [i for i in archive.infolist() if not i.is_dir() and i.filename.lower().endswith(
        ".json")]
    if len(jsons) > 1:
        names = ", ".join(i.filename for i in jsons[:5]) + (", ..." if len(jsons) > 5 else "")
        raise DatasetError(path, f"zip holds {len(jsons)} JSON files ({names}); a submission "
                                 f"zip holds one, {RESULTS_NAME}")
    info = next((i for i in jsons if i.filename == RESULTS_NAME), None)
    if info is None:
        nested = [i.filename for i in jsons if i.filename.rsplit("/", 1)[-1] == RESULTS_NAME]
        where = f" (found {nested[0]}; it must be at the top level)" if nested else ""
        raise DatasetError(path, f"zip holds no {RESULTS_NAME}{where}")
    if info.file_size > MAX_UNZIPPED_BYTES:
        raise DatasetError(path, f"{RESULTS_NAME} declares {info.file_size:,} bytes "
                                 f"uncompressed, more than the limit of {MAX_UNZIPPED_BYTES:,}")
    if (info.compress_size >= _RATIO_FREE_BYTES or info.file_size >= _RATIO_FREE_BYTES
            ) and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        raise DatasetError(path, f"{RESULTS_NAME} inflates {info.compress_size:,} bytes to "
                                 f"{info.file_size:,}, more than {MAX_ZIP_RATIO} times (a zip "
                                 "bomb?)")
    return info


@contextlib.contextmanager
def open_submission(path, what: str = "submission file") -> Iterator[BinaryIO]:
    """The bytes of a submission file as a stream: a ``.json`` file, or the one JSON member
    of a ``.zip`` (``test-results.json`` at its top level), read within the bounds above.

    Args:
        path: the file.
        what: how to name the file in errors.

    Raises:
        DatasetError: a missing file, an unreadable zip, a zip with no or several JSON
            files, or a member beyond the size bounds.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, f"{what} not found")
    if path.suffix.lower() != ".zip":
        with open(path, "rb") as f:
            yield f
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(path, f"not a readable zip file: {e}") from e
    with archive:
        info = _zip_member(archive, path)
        try:
            with archive.open(info) as member:
                yield member
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise DatasetError(path, f"not a readable zip file: {type(e).__name__}: {e}") from e


def _json_error(path: Path, error: Exception) -> DatasetError:
    if isinstance(error, RecursionError):
        return DatasetError(path, "not valid JSON: nested too deeply")
    return DatasetError(path, f"not valid JSON: {error}")


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
            level (or with other JSON files, or beyond the size bounds), or text that is not
            JSON.
    """
    path = Path(path)
    with open_submission(path, what) as stream:
        raw = stream.read()
    if not raw.strip():
        raise DatasetError(path, f"{what} is empty")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _json_error(path, e) from e


# Whitespace between JSON values.
_SPACE = re.compile(r"[ \t\r\n]*")
# A list element (one entry) may be at most this long; a syntax error is found within it.
_MAX_ELEMENT_CHARS = 1 << 28
# The type a JSON value has in Python, told by its first character.
_JSON_TYPES = {"{": "dict", "[": "list", '"': "str", "t": "bool", "f": "bool", "n": "NoneType"}


class JsonListReader:
    """The elements of a JSON list, parsed one at a time from a stream (memory: one element
    and a read buffer, whatever the list's length).

    Attributes:
        top_level: the Python type name of the document's top level (``"list"``, ``"dict"``,
            ``"number"``...), told by its first character; only a list has elements.
    """

    def __init__(self, stream: BinaryIO, path, what: str = "submission file"):
        self._path = Path(path)
        self._text = codecs.getincrementaldecoder("utf-8-sig")()
        self._stream = stream
        self._buffer, self._pos, self._eof = "", 0, False
        self._decoder = json.JSONDecoder()
        if not self._skip_space():
            raise DatasetError(self._path, f"{what} is empty")
        first = self._buffer[self._pos]
        self.top_level = _JSON_TYPES.get(first, "number" if first in "-0123456789" else "")
        if not self.top_level:
            raise DatasetError(self._path, f"not valid JSON: unexpected {first!r} at the start")

    def _read(self, size: int = _READ_BYTES) -> bool:
        """Append more text to the buffer; False at the end of the stream."""
        if self._eof:
            return False
        try:
            data = self._stream.read(size)
            self._buffer = self._buffer[self._pos:] + self._text.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise _json_error(self._path, e) from e
        self._pos = 0
        self._eof = not data
        return True

    def _skip_space(self) -> bool:
        """Move past whitespace; False at the end of the stream."""
        while True:
            self._pos = _SPACE.match(self._buffer, self._pos).end()
            if self._pos < len(self._buffer):
                return True
            if not self._read():
                return False

    def _expect(self, allowed: str) -> str:
        if not self._skip_space():
            raise DatasetError(self._path, "not valid JSON: the list is not closed (truncated?)")
        char = self._buffer[self._pos]
        if char not in allowed:
            raise DatasetError(self._path, f"not valid JSON: expected {' or '.join(allowed)} "
                                           f"in the list, found {char!r}")
        self._pos += 1
        return char

    def _element(self) -> Any:
        size = _READ_BYTES
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buffer, self._pos)
                if end < len(self._buffer) or self._eof:  # a number may go on past the buffer
                    self._pos = end
                    return value
            except json.JSONDecodeError as e:
                if self._eof:
                    raise _json_error(self._path, e) from e
            except RecursionError as e:
                raise _json_error(self._path, e) from e
            if len(self._buffer) - self._pos > _MAX_ELEMENT_CHARS:
                raise DatasetError(self._path, f"not valid JSON, or an entry longer than "
                                               f"{_MAX_ELEMENT_CHARS:,} characters")
            self._read(size)
            size *= 2  # a long element: fewer, larger reads

    def __iter__(self) -> Iterator[Any]:
        if self.top_level != "list":
            return
        self._expect("[")
        if self._skip_space() and self._buffer[self._pos] == "]":
            self._pos += 1
            return
        while True:
            if not self._skip_space():
                raise DatasetError(self._path, "not valid JSON: the list is not closed "
                                               "(truncated?)")
            yield self._element()
            if self._expect(",]") == "]":
                break
        if self._skip_space():
            raise DatasetError(self._path, "not valid JSON: extra data after the list")
