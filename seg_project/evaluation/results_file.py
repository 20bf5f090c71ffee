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
import heapq
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.instance_map import NO_RULE, OverlapRule
from ..utils.errors import DatasetError
from ..utils.paths import require_file
from .coco import GRADER_MAX_DETS
from .predictions import evaluate_predictions

__all__ = ["check_results_file", "evaluate_results_file", "ground_truth",
           "load_results_xywh", "read_best_entries"]


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


def check_results_file(path, coco_gt, source, bbox_format: str = "auto") -> str:
    """Check a results file against the ground truth with the submission checker's rules
    (:func:`seg_project.submission.check.check_submission`: ids of the ground truth's images,
    classes 1..K, scores in [0, 1], masks of each image's size as valid RLE, bboxes that fit
    them), reading it one entry at a time.

    Args:
        path: the results file (``.json`` or a ``.zip`` holding ``test-results.json``).
        coco_gt: the ground truth (a pycocotools ``COCO``).
        source: what the ground truth is, for the messages.
        bbox_format: "xywh", "xyxy" or "auto" (the layout the masks fit).

    Returns:
        str: the bbox format of the file's boxes.

    Raises:
        DatasetError: an unreadable file, or the first problem found (and how many more).
    """
    from ..submission.check import check_submission

    sizes = {image_id: (int(info["height"]), int(info["width"]))
             for image_id, info in coco_gt.imgs.items()}
    report = check_submission(path, sizes, len(coco_gt.getCatIds()), bbox_format,
                              sizes_from=f"the ground truth ({source})")
    if report.errors:
        more = len(report.errors) - 1
        raise DatasetError(path, report.errors[0] + (f" (and {more} more problem"
                                                     f"{'s' if more > 1 else ''})" if more
                                                     else ""))
    return report.bbox_format


def load_results_xywh(path, bbox_format: str = "auto") -> Tuple[List[Dict], str]:
    """Every entry of a results file, with ``bbox`` as COCO ``[x, y, w, h]`` (for a run's own
    results, e.g. choosing its operating point; :func:`evaluate_results_file` checks a file
    from elsewhere first and bounds its memory).

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


def read_best_entries(path, keep: int) -> Tuple[List[Dict], int]:
    """The entries of a checked results file that any figure can count, read one at a time:
    per (image, category) the ``keep`` highest-scoring ones (COCOeval scores no more than its
    ``maxDets`` of each; among equal scores the earlier entries, as COCOeval's stable sort
    ranks them). Memory holds at most ``keep`` entries per image and category, whatever the
    file's size.

    Args:
        path: a results file that passed :func:`check_results_file`.
        keep: entries kept per (image_id, category_id).

    Returns:
        tuple: ``(entries in file order, the number left out)``.
    """
    from ..submission.file import JsonListReader, open_submission

    best: Dict[Tuple[int, int], list] = {}
    left_out = 0
    with open_submission(path, "results file") as stream:
        for index, entry in enumerate(JsonListReader(stream, path, "results file")):
            ranked = best.setdefault((entry["image_id"], entry["category_id"]), [])
            item = (entry["score"], -index, entry)  # unique (score, -index): dicts never compared
            if len(ranked) < keep:
                heapq.heappush(ranked, item)
            else:
                heapq.heappushpop(ranked, item)
                left_out += 1
    kept = sorted((item for ranked in best.values() for item in ranked),
                  key=lambda item: -item[1])
    return [entry for _, _, entry in kept], left_out


def evaluate_results_file(results_path, source, class_names: Sequence[str], *,
                          bbox_format: str = "auto", high_cap: int = 1000, fast: bool = True,
                          pathology_threshold: Optional[float] = 0.5,
                          cache_dir=None,
                          overlap_rule: OverlapRule = NO_RULE) -> Dict[str, Dict[str, float]]:
    """Score a results file against annotated data as the grader would, plus the high-cap
    and pathology figures (:func:`seg_project.evaluation.predictions.evaluate_predictions`,
    at ``pathology_threshold`` under ``overlap_rule``).

    The file is first checked against the ground truth (:func:`check_results_file`), then
    read keeping the best ``max(high_cap, 100)`` entries of each image and category
    (:func:`read_best_entries`): every COCO figure is exact, memory stays bounded, and the
    pathology figures see the same entries (a model's file, at most ``high_cap`` detections
    per image, loses none).

    Raises:
        DatasetError: unreadable files, bad data, or a result entry that breaks the
            checker's rules (naming the first and how many more).
    """
    results_path = require_file(results_path)
    coco_gt, class_names = ground_truth(source, class_names, cache_dir)
    used_format = check_results_file(results_path, coco_gt, source, bbox_format)
    entries, left_out = read_best_entries(results_path, max(high_cap, GRADER_MAX_DETS))
    if used_format == "xyxy":
        entries = [dict(e, bbox=[e["bbox"][0], e["bbox"][1], e["bbox"][2] - e["bbox"][0],
                                 e["bbox"][3] - e["bbox"][1]]) for e in entries]
    metrics = evaluate_predictions(coco_gt, entries, class_names, high_cap=high_cap, fast=fast,
                                   pathology_threshold=pathology_threshold,
                                   overlap_rule=overlap_rule)
    metrics["input"] = {"class_names": class_names, "results": str(results_path),
                        "ground_truth": str(source), "bbox_format": used_format,
                        "entries": len(entries) + left_out, "left_out": left_out,
                        "images": len(coco_gt.getImgIds())}
    return metrics
