"""Telling ``[x, y, w, h]`` (COCO) bboxes from ``[x1, y1, x2, y2]`` ones by how they fit masks.

Each bbox is read both ways and compared with the tight box of its mask: a reading fits when
the mask lies within the bbox (up to a tolerance), the bbox lies within the image and is not
absurdly larger than the mask. The reading more masks fit wins, then the one whose boxes
match the masks' boxes better (mean IoU), then COCO's xywh. Result entries are read against
their masks by :func:`seg_project.submission.entries.measure_bboxes`: the submission checker
reports these fits; the pictures and the evaluation use the verdict.
"""

from typing import Dict, NamedTuple, Sequence, Tuple

import numpy as np

__all__ = [
    "BBOX_FORMATS",
    "FormatChoice",
    "bbox_fit",
    "bbox_message",
    "check_bbox_format",
    "choose_bbox_format",
    "to_xyxy",
]

BBOX_FORMATS = ("xywh", "xyxy")

# A mask's tight box must lie within its bbox up to TOL_PX + TOL_FRAC * (mask extent), per
# axis; the bbox may not exceed the image by more than that either. A bbox more than
# WILD_FACTOR * (mask extent) + WILD_PX wide or high does not fit its mask (Mask R-CNN's mask
# of a low-score box can be much smaller than the box, so the checker only warns about it).
TOL_PX = 2.0
TOL_FRAC = 0.05
WILD_FACTOR = 8.0
WILD_PX = 32.0

# How a bbox fits its mask (bbox_fit's codes).
FIT_OK, FIT_NEGATIVE, FIT_OUTSIDE, FIT_BEYOND, FIT_WILD = range(5)


class FormatChoice(NamedTuple):
    """What :func:`choose_bbox_format` decided.

    Attributes:
        bbox_format: ``"xywh"`` or ``"xyxy"``.
        note: how it was chosen, with how many masks fit each reading and their mean IoU.
        hint: a warning when a requested format is not the one the boxes look like, else "".
        codes: each bbox's ``FIT_*`` code when read in ``bbox_format``.
    """

    bbox_format: str
    note: str
    hint: str
    codes: np.ndarray


def check_bbox_format(bbox_format: str, allowed: Sequence[str] = BBOX_FORMATS) -> None:
    """Check a bbox format option.

    Args:
        bbox_format: the format asked for.
        allowed: the formats accepted.

    Raises:
        ValueError: ``bbox_format`` is not one of ``allowed``.
    """
    if bbox_format not in allowed:
        raise ValueError(f"bbox_format must be one of {', '.join(allowed)}, got {bbox_format!r}")


def to_xyxy(boxes, bbox_format: str) -> np.ndarray:
    """Boxes as ``[x1, y1, x2, y2]``.

    Args:
        boxes: ``(..., 4)`` boxes.
        bbox_format: how to read them: ``"xywh"`` or ``"xyxy"``.

    Returns:
        np.ndarray: ``float64`` ``(..., 4)`` ``[x1, y1, x2, y2]`` boxes (a copy).
    """
    boxes = np.array(boxes, dtype=np.float64)
    if bbox_format == "xywh":
        boxes[..., 2:] += boxes[..., :2]
    return boxes


def bbox_fit(given: np.ndarray, mask_xywh: np.ndarray, image_hw: np.ndarray,
             bbox_format: str) -> Tuple[np.ndarray, np.ndarray]:
    """Compare each bbox, read in ``bbox_format``, with its mask's tight box.

    Args:
        given: ``(N, 4)`` bboxes as submitted.
        mask_xywh: ``(N, 4)`` tight boxes of the (non-empty) masks, XYWH in whole pixels.
        image_hw: ``(N, 2)`` image heights and widths.
        bbox_format: how to read ``given``.

    Returns:
        tuple: ``(codes, iou)``: one of the ``FIT_*`` codes per bbox, and its IoU with the
        mask's box (0 for a box of negative size).
    """
    x1, y1, x2, y2 = to_xyxy(given, bbox_format).reshape(-1, 4).T
    mx1, my1, mw, mh = mask_xywh.T
    overlap = (np.clip(np.minimum(x2, mx1 + mw) - np.maximum(x1, mx1), 0, None)
               * np.clip(np.minimum(y2, my1 + mh) - np.maximum(y1, my1), 0, None))
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    iou = overlap / np.maximum(area + mw * mh - overlap, 1e-9)
    tol_x, tol_y = TOL_PX + TOL_FRAC * mw, TOL_PX + TOL_FRAC * mh
    codes = np.full(len(x1), FIT_OK, np.int8)
    codes[(x2 - x1 > WILD_FACTOR * mw + WILD_PX) | (y2 - y1 > WILD_FACTOR * mh + WILD_PX)] = \
        FIT_WILD
    codes[(x1 < -tol_x) | (y1 < -tol_y) | (x2 > image_hw[:, 1] + tol_x)
          | (y2 > image_hw[:, 0] + tol_y)] = FIT_BEYOND
    codes[(x1 > mx1 + tol_x) | (y1 > my1 + tol_y) | (x2 < mx1 + mw - tol_x)
          | (y2 < my1 + mh - tol_y)] = FIT_OUTSIDE
    codes[(x2 < x1) | (y2 < y1)] = FIT_NEGATIVE
    return codes, iou


def bbox_message(code: int, bbox: Sequence[float], mask_xywh, image_hw, fmt: str) -> str:
    """What is wrong with a bbox that :func:`bbox_fit` gave ``code`` (not OK, not wild).

    Args:
        code: its ``FIT_*`` code.
        bbox: the bbox as given.
        mask_xywh: its mask's tight XYWH box.
        image_hw: the image's height and width.
        fmt: the format the bbox was read in.

    Returns:
        str: the problem, naming the bbox and where its mask lies.
    """
    given = "[" + ", ".join(f"{v:.1f}" for v in bbox) + f"] (read as {fmt})"
    x, y, w, h = (int(v) for v in mask_xywh)
    mask_span = f"its mask spans x {x}..{x + w}, y {y}..{y + h}"
    if code == FIT_NEGATIVE:
        return f"bbox {given} has a negative width or height"
    if code == FIT_OUTSIDE:
        return f"bbox {given} does not contain its mask: {mask_span}"
    if code == FIT_BEYOND:
        return (f"bbox {given} reaches beyond the {int(image_hw[0])}x{int(image_hw[1])} image "
                f"({mask_span})")
    raise ValueError(f"no message for bbox code {code}")


def _pick(requested: str, fit: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Tuple[str, str, str]:
    """(format, note, hint) from :func:`bbox_fit`'s answer for each format."""
    total = len(fit["xywh"][0])
    if total == 0:
        return (requested if requested != "auto" else "xywh",
                "no valid non-empty mask with a valid bbox to compare with", "")
    rank = {fmt: (int(np.count_nonzero(codes == FIT_OK)), float(iou.mean()))
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


def choose_bbox_format(given: np.ndarray, mask_xywh: np.ndarray, image_hw: np.ndarray,
                       requested: str = "auto") -> FormatChoice:
    """Read the bboxes both ways and pick the format: for ``"auto"`` the one more masks fit,
    then the one whose boxes match the masks' boxes better (mean IoU), then xywh.

    Args:
        given: ``(N, 4)`` bboxes.
        mask_xywh: ``(N, 4)`` tight XYWH boxes of their non-empty masks.
        image_hw: ``(N, 2)`` image heights and widths.
        requested: ``"auto"``, ``"xywh"`` or ``"xyxy"``.

    Returns:
        FormatChoice: the format, how it was chosen, a hint when a requested format is not
        what the boxes look like, and each bbox's fit in the chosen format.
    """
    fit = {fmt: bbox_fit(given, mask_xywh, image_hw, fmt) for fmt in BBOX_FORMATS}
    chosen, note, hint = _pick(requested, fit)
    return FormatChoice(chosen, note, hint, fit[chosen][0])
