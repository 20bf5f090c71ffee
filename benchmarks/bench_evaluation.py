"""COCO evaluation time: pycocotools vs faster-coco-eval on the same inputs, same stats.

Ground truth: the CoNSeP test images through the project's reader (a COCO dict: images,
categories 1..4, annotations with RLE segmentation, bbox, area, iscrowd 0). Predictions,
made deterministically from the ground truth: shifted copies (a few pixels, through the
project's crop encoder) of 90% of the instances with jittered boxes, 10% of them in a wrong
class, plus random elliptic false positives up to the detection cap per image (1,000), with
random scores.

Both sides run the code users run: the project's
``seg_project.evaluation.coco.evaluate_coco(coco_gt, results, iou_type, max_dets, fast)``
(what ``CellsCOCOEvaluator`` calls) on a pycocotools ``COCO`` of the ground truth, with
``maxDets = [1, 10, cap]``; segm results lose their boxes there (as in Detectron2, so areas
are mask areas). ``fast=False`` is pycocotools through Detectron2's ``COCOevalMaxDets``
(plain ``COCOeval.summarize`` computes AP at maxDets 100 whatever ``maxDets`` says);
``fast=True`` is ``faster_coco_eval.COCOeval_faster`` (C++ matching and accumulation).
The 12 summary stats of both must agree (``np.allclose``, ``rtol=0``, ``atol=STATS_ATOL``).

Run: ``python benchmarks/bench_evaluation.py [--quick] [--max-dets 1000]``.
"""

import argparse
import contextlib
import copy
import io
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from common import (
    NUM_CLASSES,
    Stopwatch,
    add_common_args,
    load_consep,
    select_images,
)
from tqdm import tqdm

from seg_project.data.rle import decode_crop, encode_crops

TITLE = "COCO evaluation: pycocotools vs faster-coco-eval (same inputs, same stats)"
# Largest difference allowed between the two libraries' summary stats. Observed: none at all
# (bit-identical stats) on the 14 CoNSeP test images at 1,000 detections each, pycocotools
# 2.0.11 vs faster-coco-eval 1.8.0; 1e-6 leaves room for summation order on other builds.
STATS_ATOL = 1e-6
IOU_TYPES = ("segm", "bbox")
LIBRARIES = ("pycocotools", "faster-coco-eval")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm",
              "ARl")
MATCH_SHARE = 0.9  # ground-truth instances that get a (shifted) detection
WRONG_CLASS_SHARE = 0.1  # of those, detections given another class
MAX_SHIFT = 3  # pixels


def coco_ground_truth(records: Sequence[Dict], num_classes: int = NUM_CLASSES) -> Dict:
    """A COCO ground-truth dict (categories 1..K) of annotated reader records."""
    images, annotations = [], []
    for record in records:
        images.append({"id": record["image_id"], "file_name": record["file_name"],
                       "height": record["height"], "width": record["width"]})
        for ann in record["annotations"]:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": record["image_id"],
                "category_id": ann["category_id"] + 1,
                "segmentation": ann["segmentation"],
                "bbox": [float(v) for v in ann["bbox"]],
                "area": float(ann["area"]),
                "iscrowd": 0,
            })
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _clip_crop(crop: np.ndarray, x0: int, y0: int, height: int,
               width: int) -> Tuple[np.ndarray, int, int]:
    """Cut the parts of a crop placed at ``(x0, y0)`` that fall outside the image."""
    left, top = max(0, -x0), max(0, -y0)
    right = max(0, x0 + crop.shape[1] - width)
    bottom = max(0, y0 + crop.shape[0] - height)
    crop = crop[top:crop.shape[0] - bottom, left:crop.shape[1] - right]
    return crop, x0 + left, y0 + top


def _shifted_copies(record: Dict, chosen: np.ndarray, rng: np.random.Generator) -> List[Tuple]:
    """``(crop, x0, y0, box, category)`` of shifted copies of the chosen instances."""
    height, width = record["height"], record["width"]
    copies = []
    for index in chosen:
        ann = record["annotations"][index]
        x, y, w, h = ann["bbox"]
        dx, dy = (int(v) for v in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2))
        crop = decode_crop(ann["segmentation"], (x, y, x + w, y + h))
        crop, x0, y0 = _clip_crop(crop, x + dx, y + dy, height, width)
        if not crop.any():
            continue
        scale = np.clip(1 + rng.normal(0, 0.1, size=2), 0.5, 1.5)
        box = [x + dx + rng.normal(0, 1), y + dy + rng.normal(0, 1), w * scale[0], h * scale[1]]
        category = ann["category_id"] + 1
        if rng.random() < WRONG_CLASS_SHARE:
            category = int(rng.choice([k for k in range(1, NUM_CLASSES + 1) if k != category]))
        copies.append((crop, x0, y0, box, category))
    return copies


def _false_positives(record: Dict, count: int, rng: np.random.Generator) -> List[Tuple]:
    """``(crop, x0, y0, box, category)`` of random ellipses with ground-truth-like sizes."""
    height, width = record["height"], record["width"]
    sizes = np.array([a["bbox"][2:] for a in record["annotations"]] or [[16, 16]])
    fakes = []
    for w, h in sizes[rng.integers(0, len(sizes), size=count)]:
        w, h = int(min(max(w, 2), width)), int(min(max(h, 2), height))
        x0 = int(rng.integers(0, width - w + 1))
        y0 = int(rng.integers(0, height - h + 1))
        yy, xx = np.ogrid[:h, :w]
        crop = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1
        fakes.append((crop, x0, y0, [float(x0), float(y0), float(w), float(h)],
                      int(rng.integers(1, NUM_CLASSES + 1))))
    return fakes


def synthetic_detections(records: Sequence[Dict], max_dets: int, seed: int = 0) -> List[Dict]:
    """Deterministic COCO results for ``records``: ``max_dets`` per image (see the module
    docstring), each with ``image_id``, ``category_id``, ``score``, ``bbox`` (XYWH) and an
    RLE ``segmentation``."""
    results = []
    for record in records:
        rng = np.random.default_rng([seed, record["image_id"]])
        num = len(record["annotations"])
        matched = np.flatnonzero(rng.random(num) < MATCH_SHARE)
        chosen = rng.permutation(matched)[:max_dets]
        detections = _shifted_copies(record, chosen, rng)
        scores = list(rng.beta(4, 2, size=len(detections)))
        fakes = _false_positives(record, max_dets - len(detections), rng)
        detections += fakes
        scores += list(rng.beta(2, 4, size=len(fakes)))
        rles = encode_crops([(crop, x0, y0) for crop, x0, y0, _, _ in detections],
                            record["height"], record["width"])
        for (_, _, _, box, category), rle, score in zip(detections, rles, scores):
            results.append({"image_id": record["image_id"], "category_id": category,
                            "score": float(score), "bbox": [float(v) for v in box],
                            "segmentation": rle})
    return results


def coco_index(gt_dict: Dict):
    """A pycocotools ``COCO`` of the ground-truth dict (what ``CellsCOCOEvaluator`` holds)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
    return gt


def evaluate(coco_gt, results: List[Dict], iou_type: str, max_dets: int, library: str):
    """``seg_project.evaluation.coco.evaluate_coco`` with one library; returns
    ``(12 stats, Stopwatch of the call)``."""
    from seg_project.evaluation.coco import evaluate_coco

    with Stopwatch() as watch, contextlib.redirect_stdout(io.StringIO()):
        evaluator = evaluate_coco(coco_gt, results, iou_type, max_dets,
                                  fast=library == "faster-coco-eval")
    return np.asarray(evaluator.stats[:12], dtype=np.float64), watch


def compare_stats(reference: np.ndarray, other: np.ndarray, what: str) -> float:
    """The largest absolute difference of two stats vectors.

    Raises:
        AssertionError: they differ by more than ``STATS_ATOL`` (naming ``what``).
    """
    difference = float(np.max(np.abs(reference - other)))
    if not np.allclose(reference, other, rtol=0, atol=STATS_ATOL):
        raise AssertionError(
            f"{what}: stats differ by up to {difference:.3g} (> {STATS_ATOL:g}):\n"
            f"  pycocotools      {np.array2string(reference, precision=6)}\n"
            f"  faster-coco-eval {np.array2string(other, precision=6)}")
    return difference


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--max-dets", type=int, default=1000,
                        help="detections per image, and COCO maxDets[2] (default 1000)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images evaluated (default: all 14; quick 2)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed evaluations per library and IoU type, alternating "
                             "(default 1)")
    args = parser.parse_args(argv)
    if args.images is None and args.quick:
        args.images = 2
    if args.repeats < 1 or args.max_dets < 1 or (args.images is not None and args.images < 1):
        parser.error("--repeats, --max-dets and --images must be >= 1")
    return args


def _time_all(coco_gt, results: List[Dict], max_dets: int, repeats: int) -> Dict:
    """``{(iou_type, library): {"stats", "eval", "eval_cpu"}}`` over alternating repeats."""
    timings = {(t, lib): {"eval": [], "eval_cpu": [], "stats": None}
               for t in IOU_TYPES for lib in LIBRARIES}
    with tqdm(total=repeats * len(timings), desc="COCO evaluations", leave=False) as progress:
        for _ in range(repeats):
            for (iou_type, library), entry in timings.items():
                stats, watch = evaluate(coco_gt, results, iou_type, max_dets, library)
                entry["eval"].append(watch.wall)
                entry["eval_cpu"].append(watch.cpu)
                entry["stats"] = stats
                progress.update()
    return timings


def run(argv=None, notes: Optional[List[str]] = None) -> List[Dict]:
    """Run the evaluation benchmark; returns one row per (IoU type, library).

    Args:
        argv: command-line arguments (see ``--help``); default ``sys.argv[1:]``.
        notes: if given, lines describing the run (inputs, tolerance) are appended.

    Raises:
        AssertionError: the libraries' stats differ by more than ``STATS_ATOL``.
    """
    args = parse_args(argv)
    test = load_consep(args.data, "test")
    records = test if args.images is None else select_images(test, args.images)
    gt_dict = coco_ground_truth(records)
    results = synthetic_detections(records, args.max_dets, args.seed)
    with Stopwatch() as load:
        coco_gt = coco_index(gt_dict)
    timings = _time_all(coco_gt, results, args.max_dets, args.repeats)
    rows, largest = [], 0.0
    for iou_type in IOU_TYPES:
        reference = timings[iou_type, LIBRARIES[0]]
        base = statistics.median(reference["eval"])
        for library in LIBRARIES:
            entry = timings[iou_type, library]
            difference = compare_stats(reference["stats"], entry["stats"], iou_type)
            largest = max(largest, difference)
            median = statistics.median(entry["eval"])
            rows.append({
                "iou type": iou_type,
                "library": library,
                "evaluate_coco s": median,
                "CPU s": statistics.median(entry["eval_cpu"]),
                "speedup": base / median,
                "max |stats diff|": difference,
                **{name: float(entry["stats"][i]) for i, name in enumerate(STAT_NAMES[:3])},
                f"AR@{args.max_dets}": float(entry["stats"][8]),
            })
    settings = [
        f"{len(records)} CoNSeP test images, {len(gt_dict['annotations'])} ground-truth "
        f"instances, {len(results)} detections ({args.max_dets} per image), maxDets "
        f"[1, 10, {args.max_dets}]; median of {args.repeats} alternating run(s). The "
        f"ground truth's pycocotools index, shared by both, took {load.wall:.2f} s. "
        "\"evaluate_coco s\" is the wall clock of one call of the project's "
        "``evaluate_coco`` (loadRes of the results, evaluate, accumulate, summarize; CPU s: "
        "its process CPU time, all threads), which the speedup compares.",
        f"The 12 stats agree within atol {STATS_ATOL:g} (largest difference {largest:.3g}).",
    ]
    print("\n".join(settings), file=sys.stderr)
    if notes is not None:
        notes.extend(settings)
    return rows


def main(argv=None) -> List[Dict]:
    """Run and print the table."""
    from common import run_and_print

    return run_and_print(run, TITLE, argv)


if __name__ == "__main__":
    main()
