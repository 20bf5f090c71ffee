"""COCO AP of instance predictions: the grader's exact figures, and the same at a high cap.

The course's grader (CodaBench) runs stock pycocotools ``COCOeval`` with default parameters:
``maxDets = [1, 10, 100]``, so only the 100 highest-scoring detections of each (image,
category) pair count. Crowded images hold far more cells than that, so two evaluations are
run on the same results:

- the headline (``AP``, ``AP50``, ..., per-class ``AP-<class>`` and ``AP50-<class>``) with
  default parameters: exactly what the grader computes;
- the high-cap figures (``AP@N``, ``AP50@N``, ``AP75@N``, ``AP50@N-<class>``), with
  ``maxDets[2] = N`` (``TEST.DETECTIONS_PER_IMAGE``): what the model finds when nothing is cut.

The engine is faster-coco-eval's ``COCOeval_faster`` (its numbers equal pycocotools', which a
test checks on real CoNSeP ground truth) or pycocotools itself. AP figures are percentages,
as in Detectron2. Nothing here imports Detectron2.
"""

import contextlib
import copy
import io
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "COCO_METRICS",
    "GRADER_MAX_DETS",
    "coco_metrics",
    "evaluate_coco",
    "evaluate_coco_tasks",
    "no_prediction_metrics",
]

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# COCOeval's default maxDets[2]: the grader scores the best 100 detections per image and class.
GRADER_MAX_DETS = 100
# The high-cap figures kept beside the headline.
_HIGH_CAP_METRICS = ("AP", "AP50", "AP75")


def evaluate_coco(coco_gt, results: List[Dict], iou_type: str,
                  max_dets: int = GRADER_MAX_DETS, fast: bool = True,
                  img_ids: Optional[List[int]] = None):
    """Run COCO evaluation of ``results`` against ``coco_gt`` and return the evaluator.

    With ``max_dets == 100`` the parameters are COCOeval's defaults, untouched (the grader's
    evaluation); otherwise only ``maxDets[2]`` changes.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` ground truth.
        results: COCO result dicts with dataset category ids.
        iou_type: "bbox" or "segm".
        max_dets: detections per image and category that count (COCO's ``maxDets[2]``).
        fast: use faster-coco-eval's ``COCOeval_faster`` instead of pycocotools.
        img_ids: restrict to these image ids.

    Returns:
        The evaluator after evaluate/accumulate/summarize (``.stats``, ``.eval["precision"]``).
    """
    if iou_type == "segm":
        # Mask AP reads masks only (areas too); a bbox in xyxy or any layout changes nothing.
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        if fast:
            from faster_coco_eval import COCOeval_faster as evaluator_class
        else:
            from pycocotools.cocoeval import COCOeval as evaluator_class
        coco_eval = evaluator_class(coco_gt, coco_dt, iou_type)
        if max_dets != GRADER_MAX_DETS:
            coco_eval.params.maxDets = [1, 10, max_dets]
        if img_ids is not None:
            coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        _summarize(coco_eval, max_dets)
    return coco_eval


def _summarize(coco_eval, max_dets: int) -> None:
    """``summarize()`` at the default cap. At another cap pycocotools' ``summarize`` reads
    AP at 100 detections (its ``stats[0]``), so the AP stats are taken from the precision
    table at that cap, as ``summarize`` does at 100 (AR stats are left at -1: unused here)."""
    if max_dets == GRADER_MAX_DETS:
        coco_eval.summarize()
        return
    params = coco_eval.params
    precision = coco_eval.eval["precision"]  # (IoU, recall, class, area, max dets)
    m = list(params.maxDets).index(max_dets)
    stats = np.full(12, -1.0)
    for index, (iou, area) in enumerate([(None, "all"), (0.5, "all"), (0.75, "all"),
                                         (None, "small"), (None, "medium"), (None, "large")]):
        a = list(params.areaRngLbl).index(area)
        values = precision[:, :, :, a, m]
        if iou is not None:
            values = values[np.flatnonzero(np.isclose(params.iouThrs, iou))]
        values = values[values > -1]
        stats[index] = float(values.mean()) if values.size else -1.0
    coco_eval.stats = stats


def _percent(value: float) -> float:
    return float(value * 100) if value >= 0 else float("nan")


def coco_metrics(coco_eval, class_names: Sequence[str]) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl and per class ``AP-<name>`` and ``AP50-<name>``
    (percentages; NaN where nothing can be computed) from a summarized evaluator."""
    metrics = {name: _percent(coco_eval.stats[i]) for i, name in enumerate(COCO_METRICS)}
    # precision: (IoU thresholds, recall, class, area range, max dets); IoU index 0 is 0.5.
    precision = coco_eval.eval["precision"]
    for k, name in enumerate(class_names):
        for key, values in ((f"AP-{name}", precision[:, :, k, 0, -1]),
                            (f"AP50-{name}", precision[0, :, k, 0, -1])):
            values = values[values > -1]
            metrics[key] = float(values.mean() * 100) if values.size else float("nan")
    return metrics


def no_prediction_metrics(present_classes: Sequence[bool], class_names: Sequence[str],
                          high_cap: Optional[int] = None) -> Dict[str, float]:
    """Metrics of an evaluation without any prediction: 0 wherever there is ground truth
    (Detectron2 says NaN, which would hide a model that finds nothing), NaN per class
    without ground truth."""
    metrics = {name: 0.0 for name in COCO_METRICS}
    for present, name in zip(present_classes, class_names):
        value = 0.0 if present else float("nan")
        metrics[f"AP-{name}"] = metrics[f"AP50-{name}"] = value
        if high_cap:
            metrics[f"AP50@{high_cap}-{name}"] = value
    if high_cap:
        metrics.update({f"{name}@{high_cap}": 0.0 for name in _HIGH_CAP_METRICS})
    return metrics


def evaluate_coco_tasks(coco_gt, results: List[Dict], class_names: Sequence[str], *,
                        tasks: Sequence[str] = ("bbox", "segm"), high_cap: int = 1000,
                        fast: bool = True,
                        img_ids: Optional[List[int]] = None) -> Dict[str, Dict[str, float]]:
    """The grader-exact and the high-cap COCO metrics of each task.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` ground truth whose categories are the classes,
            in order (dataset ids 1..K).
        results: COCO result dicts (``image_id``, ``category_id`` 1..K, ``score``, ``bbox``
            as ``[x, y, w, h]``, ``segmentation`` RLE).
        class_names: the K class names.
        tasks: "bbox" and/or "segm".
        high_cap: ``maxDets[2]`` of the high-cap figures (no high-cap figures if it is 100
            or less).
        fast: faster-coco-eval instead of pycocotools.
        img_ids: restrict to these image ids.

    Returns:
        dict: ``{task: {metric: value}}`` with the grader-exact metrics under their usual
        names and the high-cap ones as ``AP@N``, ``AP50@N``, ``AP75@N`` and
        ``AP50@N-<class>``.
    """
    cap = high_cap if high_cap > GRADER_MAX_DETS else None
    if not results:
        category_ids = sorted(coco_gt.getCatIds())
        present = {ann["category_id"] for ann in coco_gt.dataset.get("annotations", [])}
        flags = [cid in present for cid in category_ids]
        return {task: no_prediction_metrics(flags, class_names, cap) for task in tasks}
    out = {}
    for task in tasks:
        metrics = coco_metrics(evaluate_coco(coco_gt, results, task, GRADER_MAX_DETS, fast,
                                             img_ids), class_names)
        if cap:
            high = coco_metrics(evaluate_coco(coco_gt, results, task, cap, fast, img_ids),
                                class_names)
            metrics.update({f"{name}@{cap}": high[name] for name in _HIGH_CAP_METRICS})
            metrics.update({f"AP50@{cap}-{name}": high[f"AP50-{name}"] for name in class_names})
        out[task] = metrics
    return out
