"""A run's operating point: the score threshold at which its cells have the highest PQ.

The cells of an image are the detections scoring at least the threshold, painted into one
instance map under the run's overlap rule (``TEST.INSTANCE_MAP``,
:mod:`seg_project.data.instance_map`). :func:`choose_operating_point` scores them at every
threshold of a grid (``TEST.OPERATING_POINT.GRID``: 0.05, 0.10, ..., 0.95) on an evaluated
split's predictions (``inference/<dataset>/coco_instances_results.json``, the run's last
evaluation, against that dataset's ground truth), without running the model again, and keeps
the threshold of highest PQ (ties: the lowest threshold). It writes ``operating_point.json``
beside the weights (the grid's PQ, DQ, SQ, AJI, mPQ and F1 per threshold, the choice, the
dataset and the rule; see :mod:`seg_project.data.score_threshold`) and records the choice in
the run's ``config.yaml`` (``TEST.OPERATING_POINT.SCORE_THRESHOLD`` and ``.DATASET``). A run
trained before operating points existed wrote ``TEST.PATHOLOGY.SCORE_THRESHOLD: 0.5`` (the
default then) into its ``config.yaml``, which would override the point: it is set to -1 there.

The trainer does this at the end of training on ``DATASETS.TEST[0]`` (the run's validation
split); ``tools/choose_operating_point.py RUN_DIR`` does it for any run folder. A threshold
chosen on the split it is then reported on is optimistic: :func:`cross_validate` chooses on
one part of the images and scores the others (what the benchmark reports on CoNSeP test).

Every image is decoded once (:func:`seg_project.evaluation.predictions.decoded_images`),
whatever the number of thresholds and rules scored (:func:`sweep`).
"""

import logging
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from ..data.instance_map import OverlapRule
from ..data.score_threshold import write_operating_point
from ..utils.errors import ConfigError, DatasetError
from ..utils.paths import require_file
from ..utils.run_files import results_file
from .pathology import PathologyAccumulator, setting_text
from .predictions import decoded_images

__all__ = [
    "CRITERION",
    "ROW_KEYS",
    "best_row",
    "choose_across_folds",
    "choose_operating_point",
    "cross_validate",
    "fold_of_images",
    "format_grid",
    "grid_rows",
    "merge_folds",
    "sweep",
]

logger = logging.getLogger(__name__)

# The figure the operating point maximises.
CRITERION = "PQ"
# The figures kept per threshold of the grid.
ROW_KEYS = ("PQ", "DQ", "SQ", "AJI", "mPQ", "F1")

Setting = Tuple[float, OverlapRule]


def sweep(coco_gt, results: List[Dict], class_names: Sequence[str],
          settings: Sequence[Setting], img_ids: Optional[Sequence[int]] = None,
          fold_of: Optional[Callable[[int], int]] = None,
          folds: int = 1) -> List[List[PathologyAccumulator]]:
    """Pathology accumulators of one split for several (score threshold, overlap rule)
    settings, every image decoded once.

    Args:
        coco_gt: a pycocotools ``COCO`` ground truth (categories = the classes, in order).
        results: the split's result entries.
        class_names: the K class names.
        settings: ``(score_threshold, rule)`` pairs.
        img_ids: the images (default: all of ``coco_gt``).
        fold_of: image id -> fold number in ``0..folds - 1`` (default: all in fold 0).
        folds: the number of folds.

    Returns:
        list: ``accumulators[fold][k]`` of the images of ``fold`` at ``settings[k]``.
    """
    accumulators = [[PathologyAccumulator(class_names, threshold, rule)
                     for threshold, rule in settings] for _ in range(folds)]
    lowest = min((threshold for threshold, _ in settings), default=0.0)
    for image in decoded_images(coco_gt, results, img_ids, min_score=lowest):
        fold = fold_of(image.image_id) if fold_of is not None else 0
        for accumulator in accumulators[fold]:
            accumulator.add_crops(image.image_id, image.gt_map, image.gt_classes,
                                  image.pred_crops, image.pred_classes, image.pred_scores)
    return accumulators


def grid_rows(accumulators: Sequence[PathologyAccumulator]) -> List[Dict[str, float]]:
    """One row per accumulator: ``score_threshold``, :data:`ROW_KEYS`, ``cells`` (instances
    in the maps) and ``detections`` (predictions at or above the threshold)."""
    rows = []
    for accumulator in accumulators:
        summary = accumulator.summarize()
        row = {"score_threshold": accumulator.score_threshold}
        row.update({key: summary[key] for key in ROW_KEYS})
        row["cells"] = sum(r["tp"] + r["fp"] for r in accumulator.per_image)
        row["detections"] = sum(r["num_pred"] for r in accumulator.per_image)
        rows.append(row)
    return rows


def best_row(rows: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The row of highest :data:`CRITERION` (ties and NaN: the lowest threshold first).

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("no thresholds to choose from")
    ordered = sorted(rows, key=lambda r: r["score_threshold"])

    def value(row):
        figure = row[CRITERION]
        return -math.inf if figure is None or math.isnan(figure) else figure

    return max(ordered, key=value)  # max keeps the first of equal values


def merge_folds(accumulators: Sequence[Sequence[PathologyAccumulator]],
                folds: Optional[Sequence[int]] = None) -> List[PathologyAccumulator]:
    """Per setting, one accumulator of the images of several folds of :func:`sweep`'s
    result (default: all folds)."""
    folds = range(len(accumulators)) if folds is None else folds
    return [PathologyAccumulator.from_states([accumulators[f][k].state() for f in folds])
            for k in range(len(accumulators[0]))]


def choose_across_folds(accumulators: Sequence[Sequence[PathologyAccumulator]]
                        ) -> Tuple[PathologyAccumulator, List[float]]:
    """Each fold scored at the threshold chosen on the other folds, pooled.

    Args:
        accumulators: :func:`sweep`'s ``[fold][k]``, the settings being thresholds of one
            overlap rule.

    Returns:
        tuple: ``(pooled accumulator, chosen threshold of each fold)``; the accumulator's
        ``score_threshold`` is NaN when the folds' thresholds differ.
    """
    folds = len(accumulators)
    chosen, states = [], []
    for part in range(folds):
        others = merge_folds(accumulators, [f for f in range(folds) if f != part])
        best = best_row(grid_rows(others))["score_threshold"]
        chosen.append(best)
        index = [a.score_threshold for a in accumulators[part]].index(best)
        states.append(accumulators[part][index].state())
    return PathologyAccumulator.from_states(states, mixed_thresholds=True), chosen


def fold_of_images(img_ids: Sequence[int], folds: int) -> Dict[int, int]:
    """Image id -> fold: in image-id order, image ``i`` into fold ``i mod folds``.

    Raises:
        ValueError: fewer than 2 folds, or fewer images than folds.
    """
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    ids = sorted(img_ids)
    if len(ids) < folds:
        raise ValueError(f"{len(ids)} images cannot be split into {folds} folds")
    return {image_id: index % folds for index, image_id in enumerate(ids)}


def cross_validate(coco_gt, results: List[Dict], class_names: Sequence[str],
                   thresholds: Sequence[float], rule: OverlapRule, folds: int = 2,
                   img_ids: Optional[Sequence[int]] = None) -> Tuple[PathologyAccumulator,
                                                                    List[float]]:
    """Honest figures at a chosen threshold: the images are split into ``folds`` parts
    (:func:`fold_of_images`); each part is scored at the threshold chosen on the other parts
    (the grid's best PQ there), and the parts' images and class counts are pooled
    (:func:`choose_across_folds`).

    Args:
        coco_gt: the ground truth.
        results: the split's result entries.
        class_names: the K class names.
        thresholds: the grid.
        rule: the overlap rule.
        folds: parts (at least 2).
        img_ids: the images (default: all of ``coco_gt``).

    Returns:
        tuple: ``(pooled accumulator, chosen threshold of each part)``.

    Raises:
        ValueError: fewer than 2 folds, or fewer images than folds.
    """
    fold = fold_of_images(img_ids if img_ids is not None else coco_gt.getImgIds(), folds)
    accumulators = sweep(coco_gt, results, class_names, [(float(t), rule) for t in thresholds],
                         sorted(fold), fold.__getitem__, folds)
    return choose_across_folds(accumulators)


def format_grid(point: Dict) -> str:
    """The grid of an operating point (``operating_point.json``'s dict) as a table, the chosen
    threshold marked, under a line saying the dataset and the rule."""
    rule = OverlapRule.from_dict(point["overlap_rule"])
    head = (f"Operating point of {point.get('dataset', '?')}: {CRITERION} highest at score >= "
            f"{point['score_threshold']:g} ({rule.describe()}); the grid:")
    keys = ["score_threshold", *ROW_KEYS, "cells", "detections"]
    rows = [["<-" if row["score_threshold"] == point["score_threshold"] else ""]
            + [row.get(key) for key in keys] for row in point["grid"]]
    return head + "\n" + tabulate(rows, ["chosen", *keys], tablefmt="pipe", floatfmt=".4f",
                                  missingval="-")


def choose_operating_point(run_dir, dataset: Optional[str] = None,
                           thresholds: Optional[Sequence[float]] = None,
                           record: bool = True) -> Dict:
    """Choose a run's operating point on an evaluated split (see the module docstring).

    Args:
        run_dir: the run folder (``config.yaml``, ``inference/<dataset>/``).
        dataset: the evaluated dataset (default: the run's ``DATASETS.TEST[0]``).
        thresholds: the grid (default: the run's ``TEST.OPERATING_POINT.GRID``).
        record: write ``operating_point.json`` and the run's ``config.yaml`` (False: only
            return the result).

    Returns:
        dict: what ``operating_point.json`` holds.

    Raises:
        ConfigError: no ``config.yaml``, or no dataset to choose on.
        DatasetError: no predictions of the dataset in the run folder, or ground truth or
            predictions that cannot be read or do not match.
    """
    from ..config import register_run_datasets, update_run_config
    from .results_file import ground_truth, load_results_xywh

    cfg = register_run_datasets(run_dir)
    if dataset is None:
        if not cfg.DATASETS.TEST:
            raise ConfigError("DATASETS.TEST", "is empty: name the dataset to choose on")
        dataset = cfg.DATASETS.TEST[0]
    predictions = require_file(results_file(run_dir, dataset))
    entries, _ = load_results_xywh(predictions)
    cache = cfg.DATASETS.CELLS.CACHE_DIR
    coco_gt, class_names = ground_truth(dataset, list(cfg.DATASETS.CELLS.CLASS_NAMES),
                                        cache_dir=False if cache == "off" else (cache or None))
    unknown = sorted({e["image_id"] for e in entries} - set(coco_gt.getImgIds()))
    if unknown:
        raise DatasetError(predictions, f"image_id(s) {unknown[:10]} are not images of "
                                        f"{dataset}: the predictions are of other data")
    rule = OverlapRule.from_config(cfg)
    grid = sorted(float(t) for t in (thresholds or cfg.TEST.OPERATING_POINT.GRID))
    if not grid or not all(0.0 <= t <= 1.0 for t in grid):
        raise ConfigError("TEST.OPERATING_POINT.GRID", f"must hold thresholds in [0, 1], got "
                                                        f"{grid}")
    rows = grid_rows(sweep(coco_gt, entries, class_names, [(t, rule) for t in grid])[0])
    best = best_row(rows)
    point = {"score_threshold": best["score_threshold"], "criterion": CRITERION,
             "dataset": dataset, "images": len(coco_gt.getImgIds()),
             "results_file": str(predictions), "overlap_rule": rule.to_dict(),
             "setting": setting_text(best["score_threshold"], rule),
             "best": best, "grid": rows}
    point = _finite(point)
    if record:
        path = write_operating_point(run_dir, point)
        values = {"TEST.OPERATING_POINT.SCORE_THRESHOLD": best["score_threshold"],
                  "TEST.OPERATING_POINT.DATASET": dataset}
        if _predates_operating_points(run_dir):
            values["TEST.PATHOLOGY.SCORE_THRESHOLD"] = -1.0
            logger.info("The run's config.yaml predates operating points: its "
                        "TEST.PATHOLOGY.SCORE_THRESHOLD 0.5 was the default then, and is set to "
                        "-1 so that the operating point applies")
        update_run_config(run_dir, values)
        logger.info(f"Operating point: score >= {best['score_threshold']:g} ({CRITERION} "
                    f"{best[CRITERION]:.4f} on {dataset}, {rule.describe()}); written to "
                    f"{path} and the run's config.yaml")
    return point


def _predates_operating_points(run_dir) -> bool:
    """Whether a run's ``config.yaml`` was written before operating points existed (no
    ``TEST.INSTANCE_MAP``) with the default of then, ``TEST.PATHOLOGY.SCORE_THRESHOLD`` 0.5
    (every key is written, so that 0.5 was no choice of the user's)."""
    from ..config import read_config_dict
    from ..utils.run_files import CONFIG_FILE

    test = read_config_dict(Path(run_dir) / CONFIG_FILE).get("TEST") or {}
    return "INSTANCE_MAP" not in test and (test.get("PATHOLOGY") or {}).get(
        "SCORE_THRESHOLD") == 0.5


def _finite(value):
    """NaN (an undefined figure) as None, so that the JSON is strict."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
