"""The instances to draw: ground-truth annotations and result entries as mask crops and boxes.

Each mask is decoded only within its bounding box (:func:`seg_project.data.rle.decode_crop`),
never at full image size (about 2 ms per instance on a 1000x1000 image, seconds for a crowded
image). Result entries may give their ``bbox`` as ``[x, y, w, h]`` (COCO) or ``[x1, y1, x2,
y2]`` (the course's example submission); :func:`detect_bbox_format` tells which.
"""

import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from ..data.image_io import DatasetError
from ..data.rle import counts_problems, decode_crop
from ..evaluation import bbox_format as formats
from .sources import result_entry_problem

__all__ = ["BBOX_FORMATS", "Shape", "detect_bbox_format", "ground_truth_shapes",
           "prediction_shapes"]

logger = logging.getLogger(__name__)

BBOX_FORMATS = ("auto",) + formats.BBOX_FORMATS


class Shape(NamedTuple):
    """One instance to draw: a bool mask crop at (x0, y0) (or None), its contiguous class,
    its score (None for ground truth) and its box (x0, y0, x1, y1) (or None)."""

    crop: Optional[np.ndarray]
    x0: int
    y0: int
    class_index: int
    score: Optional[float]
    box: Optional[Tuple[float, float, float, float]]


# ---------------------------------------------------------------- masks and boxes


def _as_rle(segmentation, height: int, width: int, where: str) -> Dict:
    """A compressed RLE (``counts`` bytes) of ``height`` x ``width`` from an RLE dict (counts
    str, bytes or list) or a list of polygons."""
    if isinstance(segmentation, list):  # polygons [[x, y, x, y, ...], ...]
        try:
            return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
        except Exception as e:
            raise DatasetError(where, f"segmentation polygons are invalid: {e}") from e
    if not isinstance(segmentation, dict) or not {"size", "counts"} <= set(segmentation):
        raise DatasetError(where, "segmentation must be an RLE {'size': [H, W], 'counts': ...} "
                                  "or a list of polygons")
    size = [int(v) for v in segmentation["size"]]
    if size != [height, width]:
        raise DatasetError(where, f"segmentation size {size} does not match the image "
                                  f"({height}x{width})")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_util.frPyObjects(segmentation, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise DatasetError(where, f"segmentation counts must be a string or a list, got "
                                  f"{type(counts).__name__}")
    return {"size": size, "counts": counts}


def _rle_problems(rles: Sequence[Dict]) -> List[Optional[str]]:
    """What is wrong with each RLE's counts (None if nothing), for the size it states."""
    return counts_problems([rle["counts"] for rle in rles],
                           [int(rle["size"][0]) * int(rle["size"][1]) for rle in rles])


def _decode_crops(
    rles: Sequence[Optional[Dict]],
) -> List[Tuple[Optional[np.ndarray], int, int]]:
    """Decode each compressed RLE within its bounding box only (``rle.decode_crop``).

    The counts are checked first: pycocotools, which gives the boxes, reads corrupt counts
    without a word.

    Returns:
        list of ``(crop, x0, y0)``: a ``bool`` crop and the image column / row of its top-left
        pixel; ``(None, 0, 0)`` for an empty mask or a None in ``rles``.

    Raises:
        ValueError: corrupt counts, naming the problem (e.g. a truncated string).
    """
    present = [rle for rle in rles if rle is not None]
    for problem in _rle_problems(present):
        if problem is not None:
            raise ValueError(f"RLE {problem}")
    boxes = iter(mask_util.toBbox(present) if present else [])
    crops = []
    for rle in rles:
        if rle is None:
            crops.append((None, 0, 0))
            continue
        x0, y0, w, h = (int(v) for v in next(boxes))
        if w <= 0 or h <= 0:
            crops.append((None, 0, 0))
            continue
        crops.append((decode_crop(rle, (x0, y0, x0 + w, y0 + h)), x0, y0))
    return crops


def _checked_crops(rles: Sequence[Optional[Dict]], where: str):
    """:func:`_decode_crops`, with corrupt masks reported as a :class:`DatasetError`."""
    try:
        return _decode_crops(rles)
    except ValueError as e:
        raise DatasetError(where, str(e)) from e


def detect_bbox_format(entries: Sequence[Dict]) -> str:
    """Tell whether the entries' ``bbox`` is ``[x, y, w, h]`` (COCO) or ``[x1, y1, x2, y2]``.

    Each box is read both ways and compared with the bounding box of its entry's mask, as the
    submission checker does (:func:`seg_project.evaluation.bbox_format.choose_bbox_format`):
    the reading more masks fit wins, then the one matching them better. Without a readable
    non-empty mask nothing tells them apart: XYWH (the COCO format) is assumed, with a warning
    unless a box whose third or fourth value is below the first or second shows it is XYWH.

    Returns:
        str: ``"xywh"`` or ``"xyxy"``.
    """
    boxes, masks = [], []
    for entry in entries:
        segmentation, box = entry.get("segmentation"), entry.get("bbox")
        if box is None or len(box) != 4:
            continue
        boxes.append([float(v) for v in box])
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            size = [int(v) for v in segmentation["size"]]
            masks.append((len(boxes) - 1, {"size": size, "counts": segmentation["counts"]}))
    box = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    readable = [(row, rle) for (row, rle), problem
                in zip(masks, _rle_problems([rle for _, rle in masks])) if problem is None]
    if readable:
        mask_box = mask_util.toBbox([rle for _, rle in readable]).reshape(-1, 4)
        nonempty = mask_box[:, 2] > 0
        if nonempty.any():
            rows = [row for (row, _), keep in zip(readable, nonempty) if keep]
            image_hw = np.array([rle["size"] for (_, rle), keep in zip(readable, nonempty)
                                 if keep], dtype=np.float64)
            return formats.choose_bbox_format(box[rows], mask_box[nonempty], image_hw).bbox_format
    if (box[:, 2] < box[:, 0]).any() or (box[:, 3] < box[:, 1]).any():
        return "xywh"
    if len(box):
        logger.warning("bbox format: no masks to compare the boxes with; assuming COCO's "
                       "[x, y, w, h] (pass bbox_format='xyxy' for [x1, y1, x2, y2])")
    return "xywh"


# ---------------------------------------------------------------- instances to draw


def _contiguous_ids(metadata) -> Dict[int, int]:
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if mapping:
        return {int(k): int(v) for k, v in mapping.items()}
    return {i + 1: i for i in range(len(metadata.thing_classes))}


def ground_truth_shapes(record: Dict, max_instances: Optional[int]) -> List[Shape]:
    """The first ``max_instances`` (None: all) annotations of a Detectron2 dataset dict."""
    from detectron2.structures import BoxMode

    height, width = int(record["height"]), int(record["width"])
    annotations = list(record.get("annotations", []))[:max_instances]
    where = str(record.get("file_name", "<record>"))
    rles = [_as_rle(a["segmentation"], height, width, where) if "segmentation" in a else None
            for a in annotations]
    shapes = []
    for ann, (crop, x0, y0) in zip(annotations, _checked_crops(rles, where)):
        box = None
        if "bbox" in ann:
            box = tuple(BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS),
                                        BoxMode.XYXY_ABS))
        shapes.append(Shape(crop, x0, y0, int(ann["category_id"]), None, box))
    return shapes


def prediction_shapes(
    entries: Sequence[Dict], metadata, height: int, width: int, score_threshold: float,
    max_instances: Optional[int], bbox_format: str, where: str,
) -> Tuple[List[Shape], int]:
    """The entries to draw, and how many passed the threshold (the cap may drop some)."""
    formats.check_bbox_format(bbox_format, BBOX_FORMATS)
    for index, entry in enumerate(entries):
        problem = result_entry_problem(entry, need_image_id=False)
        if problem:
            raise DatasetError(where, f"prediction {index}: {problem}")
    if bbox_format == "auto":
        bbox_format = detect_bbox_format(entries)
    to_contiguous = _contiguous_ids(metadata)
    passing = sorted((e for e in entries if float(e["score"]) >= score_threshold),
                     key=lambda e: -float(e["score"]))
    kept = passing[:max_instances]
    rles = []
    for entry in kept:
        if entry["category_id"] not in to_contiguous:
            raise DatasetError(where, f"category_id {entry['category_id']} is not one of the "
                                      f"dataset's ids {sorted(to_contiguous)}")
        segmentation = entry.get("segmentation")
        rles.append(None if segmentation is None
                    else _as_rle(segmentation, height, width, where))
    shapes = []
    for entry, (crop, x0, y0) in zip(kept, _checked_crops(rles, where)):
        box = None
        if entry.get("bbox") is not None:
            box = tuple(float(v) for v in formats.to_xyxy(entry["bbox"], bbox_format))
        shapes.append(Shape(crop, x0, y0, to_contiguous[entry["category_id"]],
                            float(entry["score"]), box))
    return shapes, len(passing)
