"""The project's one RLE codec: binary masks (given as crops) <-> COCO compressed RLE.

Masks of cells are small next to their images. Encoding a full-size mask per instance (what
``pycocotools.mask.encode`` needs) costs a pass over the whole image for every cell; here each
mask is given as a crop plus its offset, the run boundaries are computed on the crop only, and
pycocotools turns the runs into its compressed string. The result is byte-identical to
``pycocotools.mask.encode`` of the full-size mask.

The compressed counts strings are read here too, by one parser: :func:`parse_counts` reads
many strings at once and proves each decodes to exactly ``height * width`` pixels
(pycocotools does not check: a too-short string decodes to uninitialized memory);
:func:`counts_problems` is its verdict alone (the submission checker's), and
:func:`decode_crop` decodes one mask within a box without building the full-size mask.
"""

from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    "ParsedCounts",
    "counts_problems",
    "decode",
    "decode_crop",
    "encode_crop",
    "encode_crops",
    "parse_counts",
    "rle_to_text",
]

# pycocotools' compressed counts (maskApi.c, rleToString / rleFrString): each run length is
# written in 5-bit digits, least significant first, as characters '0' + digit ('0'..'o');
# 0x20 of a digit means "more digits follow", 0x10 of the last digit is the sign; runs after
# the third are stored as the difference to the run two places before.
_FIRST_CHAR = 48  # '0'
_MORE, _SIGN, _DIGIT_BITS = 0x20, 0x10, 0x1F
# Numbers of at most 6 digits (30 bits) are accepted: 2500 x 2500 pixels need 5.
MAX_NUMBER_CHARS = 6
_MAX_RUN = 2**32  # pycocotools keeps runs as 32-bit unsigned integers
_ALPHABET = "counts holds characters outside the RLE alphabet '0'..'o'"


def _run_bounds(crop: np.ndarray, x0: int, y0: int, height: int) -> np.ndarray:
    """Return the sorted run boundaries [s0, e0, s1, e1, ...] of a crop in full-image,
    column-major (Fortran) pixel indices; runs touching across columns are merged."""
    h, w = crop.shape
    padded = np.zeros((w, h + 2), dtype=bool)
    padded[:, 1:-1] = crop.T
    changes = np.flatnonzero(padded[:, 1:] != padded[:, :-1])
    col, row = np.divmod(changes, h + 1)
    bounds = (col + x0) * height + (row + y0)
    if bounds.size > 2:
        # A run ending at the bottom of a column and one starting at the top of the next
        # are one run in column-major order.
        touching = np.flatnonzero(bounds[2::2] == bounds[1:-1:2])
        if touching.size:
            drop = np.concatenate([2 * touching + 1, 2 * touching + 2])
            bounds = np.delete(bounds, drop)
    return bounds


def _counts(bounds: np.ndarray, num_pixels: int) -> List[int]:
    edges = np.empty(bounds.size + 2, dtype=np.int64)
    edges[0], edges[-1] = 0, num_pixels
    edges[1:-1] = bounds
    counts = edges[1:] - edges[:-1]
    if counts.size > 1 and counts[-1] == 0:
        counts = counts[:-1]  # pycocotools ends with the last run, never with an empty one
    return counts.tolist()


def encode_crops(
    crops: Iterable[Tuple[np.ndarray, int, int]], height: int, width: int
) -> List[Dict]:
    """Encode many masks of one image.

    Args:
        crops: ``(crop, x0, y0)`` triples: a 2-D boolean array (non-zero = inside) and the
            image column / row of its top-left pixel. Crops must lie inside the image.
        height: image height.
        width: image width.

    Returns:
        list[dict]: COCO compressed RLEs ``{"size": [height, width], "counts": str}``.
    """
    num_pixels = height * width
    uncompressed = []
    for crop, x0, y0 in crops:
        crop = np.asarray(crop, dtype=bool)
        h, w = crop.shape
        if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
            raise ValueError(
                f"crop of shape {crop.shape} at (x0={x0}, y0={y0}) does not fit in an image "
                f"of {height}x{width}"
            )
        bounds = _run_bounds(crop, int(x0), int(y0), height)
        uncompressed.append({"size": [height, width], "counts": _counts(bounds, num_pixels)})
    if not uncompressed:
        return []
    encoded = mask_util.frPyObjects(uncompressed, height, width)
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


def encode_crop(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> Dict:
    """Encode one mask given as a crop at ``(x0, y0)`` of a ``height`` x ``width`` image.

    Returns:
        dict: ``{"size": [height, width], "counts": str}``, identical to
        ``pycocotools.mask.encode`` of the full-size mask (with counts decoded to text).
    """
    return encode_crops([(crop, x0, y0)], height, width)[0]


def rle_to_text(rle: Dict) -> Dict:
    """Return ``rle`` with its ``counts`` as ``str`` (JSON-ready), whatever it was given as."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    elif not isinstance(counts, str):  # uncompressed list of counts
        h, w = rle["size"]
        counts = mask_util.frPyObjects(rle, h, w)["counts"].decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _as_bytes(rle: Dict) -> Dict:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str)
            else counts}


def decode(rle: Dict) -> np.ndarray:
    """Decode a compressed RLE (``counts`` str or bytes) to a full-size ``uint8`` mask."""
    return mask_util.decode(_as_bytes(rle))


# ------------------------------------------------------------------------ reading counts


class ParsedCounts(NamedTuple):
    """Compressed counts strings read by :func:`parse_counts`.

    Attributes:
        runs: ``int64`` run lengths of all strings, one string after the other; each string's
            runs alternate zeros and ones, zeros first. Meaningless for a string with a problem.
        offsets: ``(n + 1,)`` indices: string ``i``'s runs are ``runs[offsets[i]:offsets[i+1]]``.
        problems: per string ``None`` when it is valid, else what is wrong with it (the first
            problem found, e.g. ``"counts ends in the middle of a number (truncated)"``).
    """

    runs: np.ndarray
    offsets: np.ndarray
    problems: List[Optional[str]]


def _digit_tables() -> Tuple[np.ndarray, np.ndarray]:
    """Per byte value: whether it ends a number, and its signed value as a 5-bit digit (the
    last digit of a number carries the sign: ``(digit & 0x1F) - 32`` when 0x10 is set)."""
    digit = np.arange(256) - _FIRST_CHAR
    ends = (digit & _MORE) == 0
    value = digit & _DIGIT_BITS
    value[ends & ((digit & _SIGN) != 0)] -= 32
    value[(digit < 0) | (digit > 63)] = 0  # not in the alphabet: a problem of its own
    return ends, value.astype(np.int64)


_ENDS_NUMBER, _DIGIT_VALUE = _digit_tables()
# Called once per decoded mask: the ufuncs' reductions skip ndarray.min/max's Python wrappers.
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


def _mark(problems: List[Optional[str]], rows: Iterable[int], text: str) -> None:
    """Record ``text`` for the rows that have no problem yet."""
    for row in np.unique(np.asarray(rows, dtype=np.int64)):
        if problems[row] is None:
            problems[row] = text


def _ascii_texts(counts: Sequence[Union[str, bytes]], problems: List[Optional[str]]) -> List:
    """The strings as bytes; a ``str`` with non-ASCII characters is marked and read as empty."""
    texts = []
    for row, text in enumerate(counts):
        if isinstance(text, str):
            if text.isascii():
                text = text.encode("ascii")
            else:
                problems[row], text = _ALPHABET, b""
        elif not isinstance(text, bytes):
            raise TypeError(f"RLE counts must be str or bytes, got {type(text).__name__}")
        texts.append(text)
    return texts


def _number_values(chars: np.ndarray, starts: np.ndarray, num_chars: np.ndarray) -> np.ndarray:
    """The numbers of ``num_chars`` characters from ``starts`` (5-bit digits, least
    significant first); digits past :data:`MAX_NUMBER_CHARS` of a number are not read."""
    position = np.arange(chars.size)
    position -= np.repeat(starts, num_chars)
    position *= 5
    digits = _DIGIT_VALUE[chars]
    if _MAX(num_chars) > MAX_NUMBER_CHARS:
        digits[position >= 5 * MAX_NUMBER_CHARS] = 0
        np.minimum(position, 5 * MAX_NUMBER_CHARS, out=position)
    return np.add.reduceat(digits << position, starts)


def _undo_differences(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Runs from the stored numbers: run j (j > 2) of a string is stored as run j - run (j - 2).

    So runs 1, 3, 5, ... of a string are the running sums of its numbers 1, 3, 5, ... and
    runs 2, 4, ... those of its numbers 2, 4, ...; computed for all strings at once.
    """
    runs = values.copy()
    if offsets.size == 2:  # one string: its chains are plain slices
        np.cumsum(values[1::2], out=runs[1::2])
        np.cumsum(values[2::2], out=runs[2::2])
        return runs
    first = np.repeat(offsets[:-1], np.diff(offsets))  # each number's string's first number
    index = np.arange(values.size) - first
    odd = (index & 1).astype(bool)
    for chain in (odd, ~odd & (index >= 2)):
        sums = np.cumsum(np.where(chain, values, 0))
        # A string's first number is in neither chain: the sum there is all before it.
        runs[chain] = (sums - sums[first])[chain]
    return runs


def _owners(offsets: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """The strings the numbers at these indices belong to."""
    return np.searchsorted(offsets, numbers, "right") - 1


def parse_counts(counts: Sequence[Union[str, bytes]], pixels: Sequence[int]) -> ParsedCounts:
    """Read compressed RLE counts strings, all at once, and check them.

    Reads the strings the way pycocotools' ``rleFrString`` does and checks that each holds
    only characters of the alphabet, ends with a complete number, has no number longer than
    :data:`MAX_NUMBER_CHARS` characters, that every run is a non-negative 32-bit number and
    that the runs add up to the string's pixel count.

    Args:
        counts: counts strings (``str`` or ``bytes``).
        pixels: ``height * width`` of each string's mask.

    Returns:
        ParsedCounts: the runs of all strings and what is wrong with each.

    Raises:
        TypeError: a counts value that is neither ``str`` nor ``bytes``.
    """
    n = len(counts)
    problems: List[Optional[str]] = [None] * n
    texts = _ascii_texts(counts, problems)
    lengths = np.fromiter(map(len, texts), np.int64, n)
    text_ends = lengths.cumsum()
    chars = np.frombuffer(b"".join(texts), np.uint8)
    if not lengths.all():
        _mark(problems, np.flatnonzero(lengths == 0), "counts is empty")
    if chars.size == 0:
        return ParsedCounts(np.zeros(0, np.int64), np.zeros(n + 1, np.int64), problems)
    if _MIN(chars) < _FIRST_CHAR or _MAX(chars) > _FIRST_CHAR + 63:
        outside = (chars < _FIRST_CHAR) | (chars > _FIRST_CHAR + 63)
        _mark(problems, np.searchsorted(text_ends, np.flatnonzero(outside), "right"), _ALPHABET)
    number_end = _ENDS_NUMBER[chars]
    if not number_end[text_ends - 1].all():
        filled = np.flatnonzero(lengths)
        last_chars = text_ends[filled] - 1
        _mark(problems, filled[~number_end[last_chars]],
              "counts ends in the middle of a number (truncated)")
        number_end[last_chars] = True  # numbers never run across strings
    ends = np.flatnonzero(number_end)
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.searchsorted(ends, text_ends)  # numbers before each string's end
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    num_chars = ends - starts + 1
    if _MAX(num_chars) > MAX_NUMBER_CHARS:
        _mark(problems, _owners(offsets, np.flatnonzero(num_chars > MAX_NUMBER_CHARS)),
              f"counts holds a number longer than {MAX_NUMBER_CHARS} characters")
    runs = _undo_differences(_number_values(chars, starts, num_chars), offsets)
    if _MIN(runs) < 0 or _MAX(runs) >= _MAX_RUN:
        _mark(problems, _owners(offsets, np.flatnonzero((runs < 0) | (runs >= _MAX_RUN))),
              "counts decode to a negative or oversized run length")
    _check_totals(runs, offsets, np.asarray(pixels, np.int64), problems)
    return ParsedCounts(runs, offsets, problems)


def _check_totals(runs: np.ndarray, offsets: np.ndarray, pixels: np.ndarray,
                  problems: List[Optional[str]]) -> None:
    """Mark the strings whose runs do not add up to their pixel counts."""
    if offsets.size == 2:
        totals = np.array([runs.sum()])
    else:
        sums = np.zeros(runs.size + 1, np.int64)
        np.cumsum(runs, out=sums[1:])
        totals = sums[offsets[1:]] - sums[offsets[:-1]]
    wrong = totals != pixels
    if wrong.any():
        for row in np.flatnonzero(wrong):
            _mark(problems, [row], f"counts decode to {totals[row]} pixels, but the "
                                   f"segmentation size has {pixels[row]}")


def counts_problems(counts: Sequence[Union[str, bytes]],
                    pixels: Sequence[int]) -> List[Optional[str]]:
    """What is wrong with each compressed counts string (``None`` if nothing), without
    decoding any mask: :func:`parse_counts`'s verdict.

    Args:
        counts: counts strings (``str`` or ``bytes``).
        pixels: ``height * width`` of each string's mask.
    """
    return parse_counts(counts, pixels).problems


# ------------------------------------------------------------------------ decoding a box


def _runs_in_box(runs: np.ndarray, height: int, box: Tuple[int, int, int, int]) -> np.ndarray:
    """The ``(y1 - y0, x1 - x0)`` bool crop of a mask given as valid runs.

    Maps every run boundary (a column-major image pixel index) to the crop's column-major
    pixel index: pixels above or below the box in a column collapse onto the start or end of
    that column's part of the crop, columns left or right of the box onto the crop's start or
    end. The map never decreases, so the runs' images are the crop's runs.
    """
    x0, y0, x1, y1 = box
    crop_height = y1 - y0
    size = (x1 - x0) * crop_height
    column, row = np.divmod(runs[:-1].cumsum(), height)
    np.minimum(row, y1, out=row)
    np.maximum(row, y0, out=row)
    column -= x0
    column *= crop_height
    column += row
    column -= y0
    bounds = np.empty(runs.size + 1, np.int64)
    bounds[0], bounds[-1] = 0, size
    np.minimum(column, size, out=bounds[1:-1])
    np.maximum(bounds, 0, out=bounds)
    ones = np.repeat(np.arange(runs.size) & 1, bounds[1:] - bounds[:-1]).astype(bool)
    return np.ascontiguousarray(ones.reshape(x1 - x0, crop_height).T)


def decode_crop(rle: Dict, box: Sequence[int]) -> np.ndarray:
    """Decode only the part of a compressed RLE inside an integer box.

    Decoding the full-size mask costs a pass over the whole image per instance (milliseconds
    for a 1000x1000 image); this works on the runs only.

    Args:
        rle: COCO compressed RLE (``counts`` str or bytes).
        box: ``(x0, y0, x1, y1)`` integer pixel box, end-exclusive, inside the image.

    Returns:
        np.ndarray: ``bool`` array of shape ``(y1 - y0, x1 - x0)``, equal to
        ``decode(rle)[y0:y1, x0:x1]``.

    Raises:
        ValueError: the box is not inside the image, or the counts are not a valid RLE of
            the image's size (the message names the problem, e.g. a truncated string).
    """
    height, width = (int(v) for v in rle["size"])
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {tuple(box)} is not inside an image of {height}x{width}")
    parsed = parse_counts([rle["counts"]], [height * width])
    if parsed.problems[0] is not None:
        raise ValueError(f"RLE {parsed.problems[0]}")
    return _runs_in_box(parsed.runs, height, (x0, y0, x1, y1))
