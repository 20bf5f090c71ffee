"""Every number about one set of predictions against its ground truth, and their tables.

:func:`evaluate_predictions` is what the training-time evaluator and ``tools/evaluate.py``
both call: from a pycocotools ``COCO`` ground truth and COCO result entries it computes

- ``bbox`` and ``segm``: the grader-exact COCO AP and the high-cap figures
  (:mod:`seg_project.evaluation.coco`);
- ``pathology``: PQ, SQ, DQ, AJI, AJI+, Dice, F1, mPQ and per-class PQ / F1
  (:mod:`seg_project.evaluation.pathology`) from the predictions with score >= a threshold,
  painted under an overlap rule, and which threshold and rule those were.

:func:`format_tables` prints them as the three tables people read: grader-exact, high cap,
pathology. Nothing here imports Detectron2.
"""

import math
from collections import defaultdict
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
from tabulate import tabulate

from ..data.instance_map import NO_RULE, Crop, InstanceMap, OverlapRule, mask_crops
from ..data.rle import to_bytes_rle
from .coco import COCO_METRICS, GRADER_MAX_DETS, evaluate_coco_tasks
from .pathology import PathologyAccumulator, paint_ground_truth

__all__ = ["DecodedImage", "decoded_images", "evaluate_predictions", "format_tables",
           "pathology_metrics"]


class DecodedImage(NamedTuple):
    """One image of a split, decoded once for any number of pathology accumulators
    (:meth:`PathologyAccumulator.add_crops`): ``image_id``, the ground truth's instance map
    and classes (0..K-1), the predictions' crops, classes and scores."""

    image_id: int
    gt_map: InstanceMap
    gt_classes: np.ndarray
    pred_crops: List[Optional[Crop]]
    pred_classes: np.ndarray
    pred_scores: np.ndarray


def decoded_images(coco_gt, results: List[Dict], img_ids: Optional[Sequence[int]] = None,
                   min_score: float = -math.inf) -> Iterator[DecodedImage]:
    """The images of ``coco_gt`` with their predictions, decoded (one at a time).

    Args:
        coco_gt: a pycocotools ``COCO`` ground truth (categories = the classes, in order).
        results: result entries (``image_id``, ``category_id``, ``score``, ``segmentation``).
        img_ids: the images (default: all images of ``coco_gt``, in id order).
        min_score: predictions scoring below this are not decoded.

    Yields:
        DecodedImage: per image.
    """
    to_class = {cid: k for k, cid in enumerate(sorted(coco_gt.getCatIds()))}
    by_image = defaultdict(list)
    for entry in results:
        if "segmentation" in entry and float(entry["score"]) >= min_score:
            by_image[entry["image_id"]].append(entry)
    for image_id in (img_ids if img_ids is not None else sorted(coco_gt.getImgIds())):
        info = coco_gt.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if "segmentation" in a]
        preds = by_image.get(image_id, [])
        yield DecodedImage(
            image_id,
            paint_ground_truth([to_bytes_rle(a["segmentation"], height, width) for a in anns],
                               height, width),
            np.asarray([to_class[a["category_id"]] for a in anns], np.int64),
            mask_crops([to_bytes_rle(e["segmentation"], height, width) for e in preds],
                       height, width),
            np.asarray([to_class[e["category_id"]] for e in preds], np.int64),
            np.asarray([float(e["score"]) for e in preds], np.float64))


def pathology_metrics(coco_gt, results: List[Dict], class_names: Sequence[str],
                      score_threshold: float, img_ids: Optional[Sequence[int]] = None,
                      rule: OverlapRule = NO_RULE) -> PathologyAccumulator:
    """Pathology metrics of ``results`` (COCO result entries with masks) per image.

    Args:
        coco_gt: a pycocotools ``COCO`` ground truth (categories = the classes, in order).
        results: result entries (``image_id``, ``category_id``, ``score``, ``segmentation``).
        class_names: the K class names.
        score_threshold: predictions below this score are left out.
        img_ids: the images to evaluate (default: all images of ``coco_gt``).
        rule: the overlap rule of the predictions' instance maps.

    Returns:
        PathologyAccumulator: filled with every image (``summarize()``, ``per_image``).
    """
    accumulator = PathologyAccumulator(class_names, score_threshold=score_threshold, rule=rule)
    for image in decoded_images(coco_gt, results, img_ids, min_score=score_threshold):
        accumulator.add_crops(image.image_id, image.gt_map, image.gt_classes, image.pred_crops,
                              image.pred_classes, image.pred_scores)
    return accumulator


def evaluate_predictions(coco_gt, results: List[Dict], class_names: Sequence[str], *,
                         high_cap: int = 1000, fast: bool = True,
                         pathology_threshold: Optional[float] = 0.5,
                         img_ids: Optional[List[int]] = None,
                         overlap_rule: OverlapRule = NO_RULE) -> Dict[str, Dict[str, float]]:
    """COCO AP (grader-exact and high cap, bbox and segm) and the pathology metrics.

    Args:
        coco_gt: a pycocotools ``COCO`` ground truth; its categories are the classes, in
            order (the course's ids 1..K).
        results: COCO result entries (``bbox`` as ``[x, y, w, h]``).
        class_names: the K class names.
        high_cap: detections per image and class of the high-cap figures.
        fast: faster-coco-eval instead of pycocotools.
        pathology_threshold: score threshold of the pathology metrics; None skips them.
        img_ids: restrict to these image ids.
        overlap_rule: the overlap rule of the pathology metrics' instance maps.

    Returns:
        dict: ``{"bbox": {...}, "segm": {...}, "pathology": {...}}``: Detectron2's layout,
        which its trainer flattens to ``segm/AP50``, ``pathology/PQ``... in metrics.json.
        ``pathology`` also says which predictions it counted (``score_threshold``,
        ``min_visible_fraction``, ``max_mask_iou``: logged as ``pathology/score_threshold``...).
    """
    out = evaluate_coco_tasks(coco_gt, results, class_names, high_cap=high_cap, fast=fast,
                              img_ids=img_ids)
    if pathology_threshold is not None:
        accumulator = pathology_metrics(coco_gt, results, class_names, pathology_threshold,
                                        img_ids, overlap_rule)
        out["pathology"] = {**accumulator.summarize(), **accumulator.setting()}
    return out


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_tables(metrics: Dict[str, Dict[str, float]], class_names: Sequence[str],
                  high_cap: int = 1000) -> str:
    """The grader-exact COCO table, the high-cap table and the pathology table, as text."""
    blocks = []
    tasks = [t for t in ("segm", "bbox") if t in metrics]
    rows = [[t] + [_fmt(metrics[t][m]) for m in COCO_METRICS]
            + [_fmt(metrics[t].get(f"AP50-{n}", float("nan"))) for n in class_names]
            for t in tasks]
    headers = ["task", *COCO_METRICS, *[f"AP50-{n}" for n in class_names]]
    blocks.append(f"COCO AP, grader-exact (pycocotools defaults: at most {GRADER_MAX_DETS} "
                  "detections per image and class):\n"
                  + tabulate(rows, headers, tablefmt="pipe", disable_numparse=True))
    if high_cap > GRADER_MAX_DETS and tasks and f"AP@{high_cap}" in metrics[tasks[0]]:
        keys = [f"AP@{high_cap}", f"AP50@{high_cap}", f"AP75@{high_cap}",
                *[f"AP50@{high_cap}-{n}" for n in class_names]]
        rows = [[t] + [_fmt(metrics[t].get(k, float("nan"))) for k in keys] for t in tasks]
        blocks.append(f"COCO AP, high cap ({high_cap} detections per image and class; not "
                      "what the grader scores):\n"
                      + tabulate(rows, ["task", *keys], tablefmt="pipe", disable_numparse=True))
    if "pathology" in metrics:
        from .pathology import format_table

        blocks.append("Pathology metrics:\n" + format_table(metrics["pathology"], class_names))
    return "\n\n".join(blocks)
