"""The project's one RLE codec: binary masks (given as crops) <-> COCO compressed RLE.

Masks of cells are small next to their images. Encoding a full-size mask per instance (what
``pycocotools.mask.encode`` needs) costs a pass over the whole image for every cell; here each
mask is given as a crop plus its offset, the run boundaries are computed on the crop only, and
pycocotools turns the runs into its compressed string. The result is byte-identical to
``pycocotools.mask.encode`` of the full-size mask.

The compressed counts strings are read here too, by one reader that checks each decodes to
exactly ``height * width`` pixels (pycocotools does not check: a too-short string decodes to
uninitialized memory): :func:`counts_problems` gives its verdict (the submission checker's),
:func:`mask_boxes` the boxes of the masks it passes, and :func:`decode_crop` decodes one mask
within a box without building the full-size mask.
"""

from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    "counts_problems",
    "decode",
    "decode_crop",
    "encode_crop",
    "encode_crops",
    "mask_boxes",
    "rle_to_text",
    "to_bytes_rle",
]

# pycocotools' compressed counts (maskApi.c, rleToString / rleFrString): each run length is
# written in 5-bit digits, least significant first, as characters '0' + digit ('0'..'o');
# 0x20 of a digit means "more digits follow", 0x10 of the last digit is the sign; runs after
# the third are stored as the difference to the run two places before.
_FIRST_CHAR, _LAST_CHAR = 48, 111  # '0', 'o'
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

    Args:
        crop: 2-D boolean array (non-zero = inside), inside the image.
        x0: image column of its top-left pixel.
        y0: image row of its top-left pixel.
        height: image height.
        width: image width.

    Returns:
        dict: ``{"size": [height, width], "counts": str}``, identical to
        ``pycocotools.mask.encode`` of the full-size mask (with counts decoded to text).
    """
    return encode_crops([(crop, x0, y0)], height, width)[0]


def rle_to_text(rle: Dict) -> Dict:
    """Return ``rle`` with its ``counts`` as ``str`` (JSON-ready), whatever it was given as.

    Args:
        rle: a COCO RLE: compressed (``counts`` str or bytes) or uncompressed (a list).

    Returns:
        dict: ``{"size": [height, width], "counts": str}``.
    """
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    elif not isinstance(counts, str):  # uncompressed list of counts
        h, w = rle["size"]
        counts = mask_util.frPyObjects(rle, h, w)["counts"].decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def to_bytes_rle(segmentation, height: Optional[int] = None,
                 width: Optional[int] = None) -> Dict:
    """The compressed RLE (``counts`` bytes, what pycocotools reads) of a COCO segmentation.

    Args:
        segmentation: an RLE dict whose counts are a str, bytes or an uncompressed list of
            runs, or a list of polygons ``[[x, y, x, y, ...], ...]``.
        height, width: the image's size; needed for polygons only (an RLE states its own).

    Returns:
        dict: ``{"size": [height, width], "counts": bytes}``.

    Raises:
        TypeError: counts of another type.
    """
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    size = [int(v) for v in segmentation["size"]]
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_util.frPyObjects({"size": size, "counts": counts}, *size)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise TypeError(f"segmentation counts must be a string or a list, got "
                        f"{type(counts).__name__}")
    return {"size": size, "counts": counts}


def decode(rle: Dict) -> np.ndarray:
    """Decode a compressed RLE to a full-size mask (unchecked: see :func:`decode_crop`).

    Args:
        rle: COCO compressed RLE (``counts`` str or bytes).

    Returns:
        np.ndarray: ``uint8`` mask of shape ``size``.
    """
    return mask_util.decode(to_bytes_rle(rle))


# ------------------------------------------------------------------------ reading counts


def _digit_values() -> np.ndarray:
    """Each byte's value as a digit: ``(byte - '0') & 0x1F``, less 32 for a number's last digit
    (one without the 0x20 "more" bit) that has the sign bit 0x10."""
    digit = np.arange(256) - _FIRST_CHAR
    value = digit & _DIGIT_BITS
    value[((digit & _MORE) == 0) & ((digit & _SIGN) != 0)] -= 32
    return value


_DIGIT_VALUE = _digit_values()


def _texts(counts: Sequence[Union[str, bytes]], problems: List[Optional[str]]) -> List[bytes]:
    """The strings as bytes; a ``str`` with non-ASCII characters is marked and read as empty."""
    texts = []
    for row, text in enumerate(counts):
        if isinstance(text, str):
            if not text.isascii():
                problems[row], text = _ALPHABET, ""
            text = text.encode("ascii")
        elif not isinstance(text, bytes):
            raise TypeError(f"RLE counts must be str or bytes, got {type(text).__name__}")
        texts.append(text)
    return texts


def _undo_differences(numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The runs of the strings whose numbers these are (string ``i``'s are
    ``numbers[offsets[i]:offsets[i + 1]]``).

    Number j > 2 of a string holds run j - run (j - 2), so its runs 1, 3, 5... are the running
    sums of its numbers 1, 3, 5..., and its runs 2, 4... those of its numbers 2, 4...
    """
    runs = numbers.copy()
    if offsets.size == 2:  # one string: its two chains are plain slices
        np.cumsum(numbers[1::2], out=runs[1::2])
        np.cumsum(numbers[2::2], out=runs[2::2])
        return runs
    # All strings at once: sums of every other number of all strings (each string's number 0
    # zeroed: it is in neither chain), less the sum just before the string's chain starts.
    counts = np.diff(offsets)
    firsts = offsets[:-1][counts > 0]  # each string's number 0
    first = np.repeat(firsts, counts[counts > 0])  # ... for each number
    chained = numbers.copy()
    chained[firsts] = 0
    every_other = np.zeros(numbers.size + 1, np.int64)  # every_other[j + 1]: sum up to j
    every_other[1::2] = chained[0::2].cumsum()
    every_other[2::2] = chained[1::2].cumsum()
    odd = (np.arange(numbers.size) - first) & 1
    runs[:] = every_other[1:] - every_other[first + 1 - odd]
    runs[firsts] = numbers[firsts]
    return runs


def _read_counts(counts: Sequence[Union[str, bytes]], pixels: Sequence[int]
                 ) -> Tuple[np.ndarray, np.ndarray, List[Optional[str]]]:
    """Read compressed counts strings the way pycocotools' ``rleFrString`` does, and check them.

    All strings are read at once, with array operations over all their characters: for the
    100k masks of a crowded submission this takes about 0.6 s, a Python loop over the
    characters about 2.4 s. Each string is checked for, in this order: characters outside the
    alphabet, emptiness, a last number cut off, a number longer than :data:`MAX_NUMBER_CHARS`
    characters, a run that is negative or does not fit 32 bits, and runs that do not add up
    to its pixel count.

    Args:
        counts: counts strings (``str`` or ``bytes``).
        pixels: ``height * width`` of each string's mask.

    Returns:
        tuple: ``(runs, offsets, problems)``: the ``int64`` run lengths of all strings, one
        string after the other (zeros first, then ones, alternating); string ``i``'s runs are
        ``runs[offsets[i]:offsets[i + 1]]``; per string ``None`` or the first problem found
        (its runs are then meaningless).

    Raises:
        TypeError: a counts value that is neither ``str`` nor ``bytes``.
    """
    n = len(counts)
    problems: List[Optional[str]] = [None] * n
    texts = _texts(counts, problems)
    lengths = np.fromiter(map(len, texts), np.int64, n)
    text_ends = lengths.cumsum()
    chars = np.frombuffer(b"".join(texts), np.uint8)

    def mark(chars_at: np.ndarray, text: str) -> None:
        """Record ``text`` for the strings holding the characters at these positions, unless
        they have a problem already. (Called once a cheap test found some: problems are rare.)"""
        for row in set(np.searchsorted(text_ends, chars_at, "right").tolist()):
            if problems[row] is None:
                problems[row] = text

    if not lengths.all():
        for row in np.flatnonzero(lengths == 0).tolist():
            problems[row] = problems[row] or "counts is empty"
    if not chars.size:
        return np.zeros(0, np.int64), np.zeros(n + 1, np.int64), problems
    if chars.min() < _FIRST_CHAR or chars.max() > _LAST_CHAR:
        mark(np.flatnonzero((chars < _FIRST_CHAR) | (chars > _LAST_CHAR)), _ALPHABET)

    # A number ends at a digit without the "more" bit (a character below 'P'); it may not run
    # on past the end of its string.
    ends_number = chars < _FIRST_CHAR + _MORE
    last_chars = text_ends[lengths > 0] - 1
    if not ends_number[last_chars].all():
        mark(last_chars[~ends_number[last_chars]],
             "counts ends in the middle of a number (truncated)")
        ends_number[last_chars] = True
    ends = np.flatnonzero(ends_number)
    starts = np.concatenate(([0], ends[:-1] + 1))
    num_chars = ends - starts + 1
    if num_chars.max() > MAX_NUMBER_CHARS:
        mark(ends[num_chars > MAX_NUMBER_CHARS],
             f"counts holds a number longer than {MAX_NUMBER_CHARS} characters")

    # Digit k of a number (least significant first) is worth its value << 5k; digits past
    # MAX_NUMBER_CHARS only make a number that is marked already bigger still.
    place = np.arange(chars.size) - np.repeat(starts, num_chars)
    np.minimum(place, MAX_NUMBER_CHARS, out=place)
    numbers = np.add.reduceat(_DIGIT_VALUE[chars] << 5 * place, starts)
    offsets = np.searchsorted(ends, np.concatenate(([0], text_ends)))  # numbers before string i
    runs = _undo_differences(numbers, offsets)
    if runs.min() < 0 or runs.max() >= _MAX_RUN:
        mark(ends[(runs < 0) | (runs >= _MAX_RUN)],
             "counts decode to a negative or oversized run length")

    if n == 1:
        totals = runs.sum(keepdims=True)
    else:
        sums = np.concatenate(([0], runs.cumsum()))
        totals = sums[offsets[1:]] - sums[offsets[:-1]]
    for row in np.flatnonzero(totals != pixels).tolist():
        if problems[row] is None:
            problems[row] = (f"counts decode to {totals[row]} pixels, but the segmentation size "
                             f"has {pixels[row]}")
    return runs, offsets, problems


def counts_problems(counts: Sequence[Union[str, bytes]],
                    pixels: Sequence[int]) -> List[Optional[str]]:
    """What is wrong with each compressed counts string (``None`` if nothing), without
    decoding any mask.

    Each string must hold only characters of the alphabet, end with a complete number, have no
    number longer than :data:`MAX_NUMBER_CHARS` characters, and decode to non-negative 32-bit
    runs that add up to its pixel count (pycocotools checks none of this: a too-short string
    decodes to uninitialized memory).

    Args:
        counts: counts strings (``str`` or ``bytes``).
        pixels: ``height * width`` of each string's mask.

    Returns:
        list: per string ``None``, or the first problem found (e.g. ``"counts ends in the
        middle of a number (truncated)"``).
    """
    return _read_counts(counts, pixels)[2]


def mask_boxes(rles: Sequence[Dict]) -> Tuple[List[Optional[str]], np.ndarray]:
    """Check compressed RLEs and give their masks' tight boxes, without decoding any mask.

    Args:
        rles: COCO compressed RLEs (``counts`` str or bytes, ``size`` ``[height, width]``).

    Returns:
        tuple: ``(problems, boxes)``: per RLE what is wrong with its counts (``None`` if
        nothing, see :func:`counts_problems`), and ``(N, 4)`` ``float64`` XYWH boxes in whole
        pixels, ``[0, 0, 0, 0]`` for an empty mask or one with a problem.
    """
    problems = counts_problems([rle["counts"] for rle in rles],
                               [int(rle["size"][0]) * int(rle["size"][1]) for rle in rles])
    boxes = np.zeros((len(rles), 4))
    readable = [row for row, problem in enumerate(problems) if problem is None]
    if readable:
        # toBbox gives [0, 0, 0, 0] for an empty mask. (mask_util.area would tell empty masks
        # as well, but pycocotools 2.0.11 with numpy 2 fails on lists of over 255 RLEs.)
        # (pycocotools reads counts given as str too.)
        boxes[readable] = np.asarray(mask_util.toBbox([rles[row] for row in readable]),
                                     np.float64).reshape(-1, 4)
    return problems, boxes


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
    runs, _, problems = _read_counts([rle["counts"]], [height * width])
    if problems[0] is not None:
        raise ValueError(f"RLE {problems[0]}")
    return _runs_in_box(runs, height, (x0, y0, x1, y1))
