"""The instances to draw: ground-truth annotations and result entries as mask crops and boxes.

Each mask is decoded only within its bounding box (:func:`seg_project.data.rle.decode_crop`),
never at full image size (about 2 ms per instance on a 1000x1000 image, seconds for a crowded
image). Result entries are checked by the submission package's validator and may give their
``bbox`` as ``[x, y, w, h]`` (COCO) or ``[x1, y1, x2, y2]`` (the course's example
submission); :func:`seg_project.submission.entries.detect_bbox_format` tells which.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..data.image_io import DatasetError
from ..data.instance_map import OverlapRule, paint_instance_map
from ..data.rle import decode_crop, mask_boxes, to_bytes_rle
from ..submission import bbox_format as formats
from ..submission.entries import detect_bbox_format, entry_problems

__all__ = ["BBOX_FORMATS", "Shape", "ground_truth_shapes", "prediction_shapes"]

BBOX_FORMATS = ("auto",) + formats.BBOX_FORMATS
# The keys one image's predictions need (no image_id; a bbox and/or a segmentation).
PREDICTION_KEYS = ("category_id", "score")


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
            return to_bytes_rle(segmentation, height, width)
        except Exception as e:
            raise DatasetError(where, f"segmentation polygons are invalid: {e}") from e
    if not isinstance(segmentation, dict) or not {"size", "counts"} <= set(segmentation):
        raise DatasetError(where, "segmentation must be an RLE {'size': [H, W], 'counts': ...} "
                                  "or a list of polygons")
    size = [int(v) for v in segmentation["size"]]
    if size != [height, width]:
        raise DatasetError(where, f"segmentation size {size} does not match the image "
                                  f"({height}x{width})")
    try:
        return to_bytes_rle(segmentation)
    except TypeError as e:
        raise DatasetError(where, str(e)) from None


def _decode_crops(
    rles: Sequence[Optional[Dict]],
) -> List[Tuple[Optional[np.ndarray], int, int]]:
    """Decode each compressed RLE within its bounding box only (``rle.decode_crop``).

    The counts are checked first (:func:`seg_project.data.rle.mask_boxes`): pycocotools,
    which gives the boxes, reads corrupt counts without a word.

    Returns:
        list of ``(crop, x0, y0)``: a ``bool`` crop and the image column / row of its top-left
        pixel; ``(None, 0, 0)`` for an empty mask or a None in ``rles``.

    Raises:
        ValueError: corrupt counts, naming the problem (e.g. a truncated string).
    """
    present = [rle for rle in rles if rle is not None]
    problems, boxes = mask_boxes(present)
    for problem in problems:
        if problem is not None:
            raise ValueError(f"RLE {problem}")
    boxes = iter(boxes)
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


# ---------------------------------------------------------------- instances to draw


def _contiguous_ids(metadata) -> Dict[int, int]:
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if mapping:
        return {int(k): int(v) for k, v in mapping.items()}
    return {i + 1: i for i in range(len(metadata.thing_classes))}


def ground_truth_shapes(record: Dict, max_instances: Optional[int]) -> List[Shape]:
    """The annotations of a Detectron2 dataset dict as shapes to draw.

    Args:
        record: the dataset dict (``height``, ``width``, ``annotations`` with RLE or polygon
            masks and/or boxes).
        max_instances: draw the first this many (None: all).

    Returns:
        list[Shape]: one per annotation drawn.

    Raises:
        DatasetError: a mask of another size or corrupt, naming the image file.
    """
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


def _cells(passing: List[Dict], rles: List[Optional[Dict]], height: int, width: int,
           rule: OverlapRule, where: str) -> Tuple[List[Dict], List[Optional[Dict]], List]:
    """The passing entries that are cells under ``rule``, their RLEs and their visible crops
    in the instance map (entries without a mask are kept as they are, with no crop)."""
    crops = [(crop, x0, y0) if crop is not None else None
             for crop, x0, y0 in _checked_crops(rles, where)]
    painted = paint_instance_map(crops, height, width,
                                 scores=[float(e["score"]) for e in passing], rule=rule)
    visible = {index: painted.visible_crop(label, crops[index])
               for label, index in enumerate(painted.order.tolist(), start=1)}
    keep = [i for i in range(len(passing)) if i in visible or rles[i] is None]
    return ([passing[i] for i in keep], [rles[i] for i in keep],
            [visible.get(i, (None, 0, 0)) for i in keep])


def prediction_shapes(
    entries: Sequence[Dict], metadata, height: int, width: int, score_threshold: float,
    max_instances: Optional[int], bbox_format: str, where: str,
    rule: Optional[OverlapRule] = None,
) -> Tuple[List[Shape], int]:
    """One image's result entries as shapes to draw, the highest scores first.

    Args:
        entries: result entries (``image_id`` not needed), checked here.
        metadata: Detectron2 metadata (dataset ids to classes).
        height: image height.
        width: image width.
        score_threshold: entries scoring below this are left out.
        max_instances: draw at most this many (None: no cap).
        bbox_format: ``"xywh"``, ``"xyxy"`` or ``"auto"`` (see
            :func:`seg_project.submission.entries.detect_bbox_format`).
        where: named in errors (e.g. the results file).
        rule: None: every passing entry drawn with its whole mask (overlaps drawn over each
            other); an overlap rule: the cells, each entry's pixels in the passing entries'
            instance map (:func:`seg_project.data.instance_map.paint_instance_map`), so that
            what is drawn is what the pathology metrics and the exports count.

    Returns:
        tuple: ``(shapes, passing)``: the shapes, and how many entries passed the threshold
        (and the rule; the cap may have dropped some).

    Raises:
        DatasetError: a malformed entry, an unknown category, or a mask of another size or
            corrupt.
    """
    formats.check_bbox_format(bbox_format, BBOX_FORMATS)
    for index, entry in enumerate(entries):
        problem = entry_problems(entry, PREDICTION_KEYS).first()
        if problem:
            raise DatasetError(where, f"prediction {index}: {problem}")
    if bbox_format == "auto":
        bbox_format = detect_bbox_format(entries)
    to_contiguous = _contiguous_ids(metadata)
    passing = sorted((e for e in entries if float(e["score"]) >= score_threshold),
                     key=lambda e: -float(e["score"]))
    if rule is None:
        passing = passing[:max_instances]  # only what is drawn needs decoding
    rles = []
    for entry in passing:
        if entry["category_id"] not in to_contiguous:
            raise DatasetError(where, f"category_id {entry['category_id']} is not one of the "
                                      f"dataset's ids {sorted(to_contiguous)}")
        segmentation = entry.get("segmentation")
        rles.append(None if segmentation is None
                    else _as_rle(segmentation, height, width, where))
    if rule is None:
        total = len([e for e in entries if float(e["score"]) >= score_threshold])
        kept, crops = passing, _checked_crops(rles, where)
    else:
        passing, rles, crops = _cells(passing, rles, height, width, rule, where)
        total = len(passing)
        kept, crops = passing[:max_instances], crops[:max_instances]
    shapes = []
    for entry, (crop, x0, y0) in zip(kept, crops):
        box = None
        if entry.get("bbox") is not None:
            box = tuple(float(v) for v in formats.to_xyxy(entry["bbox"], bbox_format))
        shapes.append(Shape(crop, x0, y0, to_contiguous[entry["category_id"]],
                            float(entry["score"]), box))
    return shapes, total
