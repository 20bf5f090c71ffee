"""The sections of the run report (:mod:`.report`) that compare the last evaluation's
predictions (``inference/<dataset>/coco_instances_results.json``) with the dataset's ground
truth: the class confusion matrix and the best and worst images by PQ.

Choice of the best and worst images: the images are ranked by per-image PQ (ties: higher
AJI first, then the dataset's order); the best are the first ``min(N, ceil(n / 2))``, the
worst the last ``min(N, n - best)`` of the rest, so that no image is shown twice when the
split has fewer than ``2 N`` images.
"""

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..data.instance_map import NO_RULE, OverlapRule, cell_entries
from ..evaluation.confusion import DEFAULT_MATCH_IOU, confusion_labels, confusion_matrix
from ..utils.errors import DatasetError
from .report_html import Section, figure_png, image_png, img_tag, paragraph, table

__all__ = [
    "EvaluatedSet",
    "PICTURE_BUDGET_BYTES",
    "best_worst_section",
    "confusion_section",
    "load_evaluated_set",
    "pick_best_worst",
]

logger = logging.getLogger(__name__)

# The PNGs of the best/worst section share this many bytes (the page stays under ~10 MB
# with base64's 4/3 and the curves); no picture is wider than MAX_PICTURE_WIDTH.
PICTURE_BUDGET_BYTES = 6 * 2**20
# Each half of a best/worst picture is drawn with this long side (small images larger, crisp
# pixel blocks; large ones smaller), so that the two halves fill the page's width at 1:1.
PANEL_SIZE = 600
MAX_PICTURE_WIDTH = 2 * PANEL_SIZE


@dataclass
class EvaluatedSet:
    """An evaluated dataset with its ground truth and the last evaluation's predictions.

    Attributes:
        dataset: the registered dataset's name (``cells_val``...).
        results_file: the predictions' ``coco_instances_results.json``.
        coco_gt: the ground truth as a pycocotools ``COCO``.
        class_names: the K class names.
        entries: the predictions (COCO result entries).
        records: the dataset's Detectron2 dicts, by image id.
        metadata: the dataset's Detectron2 metadata.
    """

    dataset: str
    results_file: Path
    coco_gt: object
    class_names: List[str]
    entries: List[Dict]
    records: Dict[int, Dict]
    metadata: object


def load_evaluated_set(dataset: str, results_file: Path,
                       class_names: Sequence[str]) -> EvaluatedSet:
    """Read the ground truth of a registered dataset and the predictions made on it.

    Raises:
        DatasetError: unreadable data or results, or predictions for images that are not the
            dataset's (the data or the split changed since the evaluation).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..evaluation.results_file import ground_truth
    from ..submission.entries import load_result_entries

    start = time.perf_counter()
    coco_gt, class_names = ground_truth(dataset, class_names)
    entries = load_result_entries(results_file)
    known = set(coco_gt.getImgIds())
    unknown = sorted({e["image_id"] for e in entries} - known)
    if unknown:
        raise DatasetError(results_file, f"image_id(s) {', '.join(map(str, unknown[:5]))} are "
                                         f"none of the {len(known)} images of {dataset} (the "
                                         "data or the split changed since the evaluation?)")
    records = {r["image_id"]: r for r in DatasetCatalog.get(dataset)}
    logger.info(f"report: {dataset}: {len(known)} images, {len(coco_gt.getAnnIds())} "
                f"ground-truth instances, {len(entries)} predictions "
                f"({time.perf_counter() - start:.1f} s)")
    return EvaluatedSet(dataset, Path(results_file), coco_gt, list(class_names), entries,
                        records, MetadataCatalog.get(dataset))


# ---------------------------------------------------------------------- confusion


def _heatmap(matrix: np.ndarray, class_names: Sequence[str]) -> bytes:
    """The matrix as a heatmap: colors are the share of each row, cells print the counts."""
    from matplotlib.figure import Figure

    rows, cols = confusion_labels(class_names)
    sums = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, sums, out=np.zeros(matrix.shape), where=sums > 0)
    size = len(rows)
    fig = Figure(figsize=(2.2 + 1.0 * size, 1.6 + 0.8 * size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for r in range(size):
        for c in range(size):
            ax.text(c, r, str(int(matrix[r, c])), ha="center", va="center", fontsize=9,
                    color="white" if shares[r, c] > 0.6 else "black")
    ax.set_xticks(range(size), cols, rotation=30, ha="right")
    ax.set_yticks(range(size), rows)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.axhline(size - 1.5, color="0.4", linewidth=1)
    ax.axvline(size - 1.5, color="0.4", linewidth=1)
    fig.colorbar(image, ax=ax, label="share of the row", shrink=0.8)
    ax.set_title("Class confusion of matched instances")
    return figure_png(fig, dpi=100)


def _cells(evaluated: EvaluatedSet, score_threshold: float, rule: OverlapRule) -> List[Dict]:
    """The entries that are cells (:func:`seg_project.data.instance_map.cell_entries`),
    image by image."""
    by_image: Dict[int, List[Dict]] = {}
    for entry in evaluated.entries:
        by_image.setdefault(entry["image_id"], []).append(entry)
    cells = []
    for image_id, entries in by_image.items():
        info = evaluated.coco_gt.imgs[image_id]
        cells += cell_entries(entries, info["height"], info["width"], score_threshold, rule)
    return cells


def confusion_section(evaluated: EvaluatedSet, score_threshold: float,
                      iou: float = DEFAULT_MATCH_IOU, rule: OverlapRule = NO_RULE) -> Section:
    """The confusion matrix (:func:`seg_project.evaluation.confusion.confusion_matrix`) of
    the cells (the predictions at or above ``score_threshold`` that ``rule`` keeps) as a table
    and a heatmap."""
    start = time.perf_counter()
    names = evaluated.class_names
    matrix = confusion_matrix(evaluated.coco_gt, _cells(evaluated, score_threshold, rule),
                              names, score_threshold, iou)
    k = len(names)
    matched = int(matrix[:k, :k].sum())
    correct = int(np.trace(matrix[:k, :k]))
    num_gt = int(matrix[:k].sum())
    num_pred = int(matrix[:, :k].sum())
    logger.info(f"report: confusion matrix of {num_pred} predictions and {num_gt} ground-truth "
                f"instances ({time.perf_counter() - start:.1f} s)")
    section = Section("confusion", "Class confusion")
    section.notes.append(
        f"{evaluated.dataset}: predictions with score \u2265 {score_threshold:g} "
        f"({rule.describe()}) matched one-to-one to the ground truth, with their whole masks, "
        f"class-agnostically, at mask IoU \u2265 {iou:g} "
        "(greedy by score). Rows: ground-truth class (last row: unmatched predictions); "
        "columns: predicted class (last column: unmatched ground truth).")
    share = f" ({100 * correct / matched:.1f}% of the matched)" if matched else ""
    section.notes.append(f"{num_gt} ground-truth instances, {num_pred} predictions; "
                         f"{matched} matched, {correct} of them with the right class{share}; "
                         f"{num_gt - matched} missed, {num_pred - matched} spurious.")
    rows, cols = confusion_labels(names)
    cells, attrs = [], []
    for r, label in enumerate(rows):
        cells.append([label] + [int(v) for v in matrix[r]])
        line: List[Optional[Dict[str, object]]] = [None]
        for c in range(k + 1):
            klass = "diag" if r == c < k else ("zero" if matrix[r, c] == 0 else "")
            cell = {"data-row": r, "data-col": c}
            if klass:
                cell["class"] = klass
            line.append(cell)
        attrs.append(line)
    section.body = (table(["ground truth \\ predicted", *cols], cells, attrs,
                          table_id="confusion-matrix")
                    + f"\n<figure>{img_tag(_heatmap(matrix, names), 'confusion heatmap')}"
                    "<figcaption>Colors: share of each row; numbers: counts.</figcaption>"
                    "</figure>")
    return section


# --------------------------------------------------------------------- best / worst


def pick_best_worst(per_image: Sequence[Dict], count: int):
    """The best and worst images by PQ (see the module docstring).

    Args:
        per_image: per-image metric dicts with ``pq`` and ``aji``.
        count: N, the most images of each kind.

    Returns:
        tuple: ``(best, worst)`` lists of those dicts, best first and worst first.
    """
    ranked = sorted(per_image, key=lambda m: (-m["pq"], -m["aji"]))
    num_best = min(count, math.ceil(len(ranked) / 2))
    num_worst = min(count, len(ranked) - num_best)
    worst = ranked[len(ranked) - num_worst:][::-1]
    return ranked[:num_best], worst


def _picture(evaluated: EvaluatedSet, image_id: int, entries: List[Dict],
             score_threshold: float, rule: OverlapRule, max_bytes: int) -> bytes:
    from ..data.image_io import read_image
    from ..visualization import DrawStyle, draw_ground_truth, draw_predictions, side_by_side

    record = evaluated.records[image_id]
    image = read_image(record["file_name"])
    # Outlines and fills with the legend's counts, no per-cell labels (they cover cells).
    style = DrawStyle(labels=False, min_size=PANEL_SIZE, max_size=PANEL_SIZE, legend=True)
    truth = draw_ground_truth(image, record, evaluated.metadata, style)
    predicted = draw_predictions(image, entries, evaluated.metadata, score_threshold, style,
                                 bbox_format="xywh", where=str(evaluated.results_file),
                                 overlap_rule=rule)
    return image_png(side_by_side(truth, predicted), max_bytes, MAX_PICTURE_WIDTH)


def _card(evaluated: EvaluatedSet, metrics: Dict, png: bytes) -> str:
    from ..visualization import image_name

    record = evaluated.records[metrics["image_id"]]
    name = image_name(record["file_name"])
    caption = (f"{name}: PQ {metrics['pq']:.4f}, AJI {metrics['aji']:.4f}, "
               f"Dice {metrics['dice']:.4f}; {metrics['num_gt']} ground-truth instances, "
               f"{metrics['num_pred']} predictions (TP {metrics['tp']}, FP {metrics['fp']}, "
               f"FN {metrics['fn']})")
    attrs = {"data-image-id": metrics["image_id"], "data-pq": f"{metrics['pq']:.6f}"}
    return (f'<figure class="image-card">{img_tag(png, name, attrs)}'
            f"<figcaption>{paragraph(caption)}</figcaption></figure>")


def best_worst_section(evaluated: EvaluatedSet, score_threshold: float, count: int,
                       logged_pq: Optional[float] = None,
                       rule: OverlapRule = NO_RULE) -> Section:
    """The best and worst ``count`` images by per-image PQ, ground truth (left) next to the
    predictions (right), with their PQ, AJI, Dice and counts.

    Args:
        evaluated: the dataset and predictions.
        score_threshold: the pathology score threshold (predictions below it are neither
            scored nor drawn).
        count: N, the most images of each kind.
        logged_pq: ``pathology/PQ`` of the last evaluation, checked against the mean of the
            per-image PQ (None: not checked).
        rule: the overlap rule of the cells (metrics and pictures).
    """
    from ..evaluation.predictions import pathology_metrics

    section = Section("best-worst", "Best and worst images by PQ")
    start = time.perf_counter()
    per_image = pathology_metrics(evaluated.coco_gt, evaluated.entries, evaluated.class_names,
                                  score_threshold, rule=rule).per_image
    if not per_image:
        section.missing = f"{evaluated.dataset} has no images"
        return section
    mean_pq = float(np.mean([m["pq"] for m in per_image]))
    section.notes.append(f"{evaluated.dataset}: {len(per_image)} images, predictions with "
                         f"score \u2265 {score_threshold:g} ({rule.describe()}); mean PQ "
                         f"{mean_pq:.4f}. Left: "
                         "ground truth; right: predictions; colors are classes, counted in "
                         "the legend under each half.")
    if logged_pq is not None and math.isfinite(logged_pq) and abs(logged_pq - mean_pq) > 1e-6:
        section.notes.append(f"The mean PQ differs from the last evaluation's pathology/PQ "
                             f"({logged_pq:.4f}): {evaluated.results_file} is not from that "
                             "evaluation, or the data changed since.")
    best, worst = pick_best_worst(per_image, count)
    by_image: Dict[int, List[Dict]] = {}
    for entry in evaluated.entries:
        by_image.setdefault(entry["image_id"], []).append(entry)
    max_bytes = PICTURE_BUDGET_BYTES // max(1, len(best) + len(worst))
    for title, chosen in (("Best", best), ("Worst", worst)):
        if not chosen:
            continue
        cards = [_card(evaluated, m, _picture(evaluated, m["image_id"],
                                              by_image.get(m["image_id"], []),
                                              score_threshold, rule, max_bytes))
                 for m in chosen]
        section.body += (f'<h3>{title} {len(chosen)}</h3><div class="cards" '
                         f'id="{title.lower()}-images">{"".join(cards)}</div>\n')
    if len(best) + len(worst) < 2 * count:
        section.notes.append(f"Only {len(per_image)} images: each is shown once.")
    logger.info(f"report: per-image metrics and {len(best) + len(worst)} pictures "
                f"({time.perf_counter() - start:.1f} s)")
    return section
