"""Scoring a results file against annotated data: the job behind ``tools/evaluate.py``.

A results file is a grader submission (``test-results.json`` or a zip holding it; boxes
``[x, y, w, h]`` or ``[x1, y1, x2, y2]``, told apart by how they fit the masks) or the
evaluator's ``coco_instances_results.json``. The ground truth is a registered Detectron2
dataset (``cells_val``, ``cells_annotated_test``...) or a folder of annotated image folders in
the course layout (``<folder>/<name>/image.tif`` + ``classN.tif``). Image ids of the results
must be the dataset's: the ids the training-time evaluator writes (a stable hash of each image
folder's name, see :mod:`seg_project.data.reader`).
"""

import contextlib
import hashlib
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.instance_map import NO_RULE, OverlapRule
from ..utils.errors import DatasetError
from .predictions import evaluate_predictions

__all__ = ["evaluate_results_file", "ground_truth", "load_results_xywh"]


def ground_truth(source, class_names: Sequence[str],
                 cache_dir=None) -> Tuple[object, List[str]]:
    """A pycocotools ``COCO`` of an annotated dataset, and its class names.

    Args:
        source: a registered dataset name, or a folder of ``<name>/image.tif`` folders.
        class_names: the K class names (folders only; a registered dataset has its own).
        cache_dir: the conversion cache (None: default, False: off).

    Raises:
        DatasetError: neither a registered dataset nor a folder, or bad data.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.coco import convert_to_coco_dict
    from pycocotools.coco import COCO

    from ..data.catalog import register_cells

    name = str(source)
    if name not in DatasetCatalog.list():
        folder = Path(source)
        if not folder.is_dir():
            raise DatasetError(folder, "neither a registered dataset nor a folder")
        digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
        name = f"cells_evaluate_{digest}"
        register_cells(name, folder, class_names=class_names, cache_dir=cache_dir)
    coco_dict = convert_to_coco_dict(name)  # reads, and so checks, the data
    if not coco_dict["annotations"] and not coco_dict["images"]:
        raise DatasetError(source, "holds no annotated images")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = coco_dict
        coco_gt.createIndex()
    return coco_gt, list(MetadataCatalog.get(name).thing_classes)


def load_results_xywh(path, bbox_format: str = "auto") -> Tuple[List[Dict], str]:
    """Result entries of a results file with ``bbox`` as COCO ``[x, y, w, h]``.

    Args:
        path: ``test-results.json``, a zip holding it, or ``coco_instances_results.json``.
        bbox_format: "xywh", "xyxy" or "auto" (the layout the masks fit).

    Returns:
        tuple: ``(entries, bbox_format)``: the format the file's boxes were read in.

    Raises:
        DatasetError: unreadable file or a malformed entry.
    """
    from ..submission.entries import detect_bbox_format, load_result_entries

    entries = load_result_entries(path)
    if bbox_format == "auto":
        bbox_format = detect_bbox_format(entries)
    if bbox_format == "xyxy":
        entries = [dict(e, bbox=[e["bbox"][0], e["bbox"][1], e["bbox"][2] - e["bbox"][0],
                                 e["bbox"][3] - e["bbox"][1]]) if e.get("bbox") else e
                   for e in entries]
    return entries, bbox_format


def evaluate_results_file(results_path, source, class_names: Sequence[str], *,
                          bbox_format: str = "auto", high_cap: int = 1000, fast: bool = True,
                          pathology_threshold: Optional[float] = 0.5,
                          cache_dir=None,
                          overlap_rule: OverlapRule = NO_RULE) -> Dict[str, Dict[str, float]]:
    """Score a results file against annotated data as the grader would, plus the high-cap
    and pathology figures (:func:`seg_project.evaluation.predictions.evaluate_predictions`,
    at ``pathology_threshold`` under ``overlap_rule``).

    Raises:
        DatasetError: unreadable files, bad data, or result image ids that are not the
            dataset's.
    """
    entries, used_format = load_results_xywh(results_path, bbox_format)
    coco_gt, class_names = ground_truth(source, class_names, cache_dir)
    known = set(coco_gt.getImgIds())
    unknown = sorted({e["image_id"] for e in entries} - known)
    if unknown:
        raise DatasetError(results_path, f"image_id(s) {', '.join(map(str, unknown[:10]))} are "
                                         f"none of the {len(known)} images of {source}")
    categories = set(coco_gt.getCatIds())
    bad = sorted({e["category_id"] for e in entries} - categories)
    if bad:
        raise DatasetError(results_path, f"category_id(s) {bad} are not among the dataset's "
                                         f"1..{len(categories)}")
    metrics = evaluate_predictions(coco_gt, entries, class_names, high_cap=high_cap, fast=fast,
                                   pathology_threshold=pathology_threshold,
                                   overlap_rule=overlap_rule)
    metrics["input"] = {"class_names": class_names, "results": str(results_path),
                        "ground_truth": str(source), "bbox_format": used_format,
                        "entries": len(entries), "images": len(known)}
    return metrics
