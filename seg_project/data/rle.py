"""The project's one RLE encoder: binary masks (given as crops) -> COCO compressed RLE.

Masks of cells are small next to their images. Encoding a full-size mask per instance (what
``pycocotools.mask.encode`` needs) costs a pass over the whole image for every cell; here each
mask is given as a crop plus its offset, the run boundaries are computed on the crop only, and
pycocotools turns the runs into its compressed string. The result is byte-identical to
``pycocotools.mask.encode`` of the full-size mask.
"""

from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["encode_crop", "encode_crops", "decode", "decode_crop", "rle_to_text"]


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


def _counts_from_string(counts: bytes) -> np.ndarray:
    """Parse pycocotools' compressed counts string to run lengths (vectorised).

    The format (maskApi.c, rleToString): each count is written in 5-bit groups, least
    significant first, as characters ``48 + bits`` with 0x20 marking "more groups follow" and
    0x10 of the last group the sign; counts after the third are stored as the difference to
    the count two places before.
    """
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = (chars & 0x20) == 0
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    position = np.arange(chars.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    # Undo the delta coding: c[i] = v[i] + c[i-2] for i > 2.
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


def decode_crop(rle: Dict, box: Sequence[int]) -> np.ndarray:
    """Decode only the part of a compressed RLE inside an integer box.

    Decoding the full-size mask costs a pass over the whole image per instance (milliseconds
    for a 1000x1000 image); this works on the runs inside the box's columns only.

    Args:
        rle: COCO compressed RLE (``counts`` str or bytes).
        box: ``(x0, y0, x1, y1)`` integer pixel box, end-exclusive, inside the image.

    Returns:
        np.ndarray: ``bool`` array of shape ``(y1 - y0, x1 - x0)``, equal to
        ``decode(rle)[y0:y1, x0:x1]``.
    """
    height, width = (int(v) for v in rle["size"])
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {tuple(box)} is not inside an image of {height}x{width}")
    counts = rle["counts"]
    counts = _counts_from_string(counts.encode("ascii") if isinstance(counts, str) else counts)
    ends = np.cumsum(counts)
    run_starts, run_ends = (ends - counts)[1::2], ends[1::2]  # runs of ones: odd positions
    lo, hi = x0 * height, x1 * height
    run_starts = np.clip(run_starts, lo, hi) - lo
    run_ends = np.clip(run_ends, lo, hi) - lo
    keep = run_ends > run_starts
    edges = np.zeros(hi - lo + 1, dtype=np.int32)
    # Runs of ones are disjoint and separated by zeros, so no index repeats within each set.
    edges[run_starts[keep]] += 1
    edges[run_ends[keep]] -= 1
    columns = np.cumsum(edges[:-1]).astype(bool).reshape(x1 - x0, height)
    return np.ascontiguousarray(columns[:, y0:y1].T)
