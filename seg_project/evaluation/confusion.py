"""Class confusion of matched instances: which class the model gave each ground-truth cell.

Per image, the predictions with ``score >= score_threshold`` are matched to the ground truth
**class-agnostically** and one-to-one, greedily by score as COCO matches detections: in
descending score order (ties: the given order), each prediction takes the still unmatched
ground-truth instance of highest mask IoU, if that IoU is at least ``iou`` (default 0.5).
IoUs come from pycocotools (``mask.iou`` on the RLEs, boxes checked first in C), computed on
the masks as given: unlike the pathology metrics (:mod:`.pathology`) nothing is painted, so
overlapping predictions keep all their pixels.

The counts form a ``(K + 1) x (K + 1)`` matrix ``M`` (K classes, in the order of the ground
truth's sorted category ids, i.e. the course's ids 1..K):

- ``M[g, p]`` for ``g, p < K``: matched pairs of ground-truth class ``g`` given class ``p``
  (the diagonal holds the correctly classified cells);
- ``M[g, K]`` (column "missed"): ground-truth instances of class ``g`` left unmatched;
- ``M[K, p]`` (row "spurious"): predictions of class ``p`` left unmatched;
- ``M[K, K]`` is always 0.

So row sums over the first K rows are the ground-truth instances per class, and column sums
over the first K columns the predictions (above the threshold) per class.
"""

from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from tabulate import tabulate

__all__ = [
    "DEFAULT_MATCH_IOU",
    "MISSED",
    "SPURIOUS",
    "confusion_labels",
    "confusion_matrix",
    "format_confusion",
    "match_greedy",
]

DEFAULT_MATCH_IOU = 0.5
# Names of the extra column (unmatched ground truth) and row (unmatched predictions).
MISSED = "missed"
SPURIOUS = "spurious"


def match_greedy(ious: np.ndarray, scores: Sequence[float],
                 iou: float = DEFAULT_MATCH_IOU) -> List[Tuple[int, int]]:
    """One-to-one matching of predictions to ground truth, greedy by score.

    Args:
        ious: ``(num_pred, num_gt)`` IoU of every prediction with every ground truth.
        scores: the predictions' scores.
        iou: the least IoU of a match.

    Returns:
        list: ``(prediction index, ground-truth index)`` pairs, in matching order.
    """
    pairs: List[Tuple[int, int]] = []
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        return pairs
    ious = ious.reshape(len(scores), -1)
    taken = np.zeros(ious.shape[1], dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    for d in order.tolist():
        row = np.where(taken, -1.0, ious[d])
        g = int(np.argmax(row))
        if row[g] >= iou:
            taken[g] = True
            pairs.append((d, g))
    return pairs


def _rles(coco_gt, items: Sequence[Dict]) -> List[Dict]:
    """Compressed RLEs of annotations or result entries (``annToRLE`` handles polygons and
    uncompressed RLEs, sized from the entry's image)."""
    return [coco_gt.annToRLE(item) for item in items]


def confusion_matrix(coco_gt, results: Sequence[Dict], class_names: Sequence[str],
                     score_threshold: float, iou: float = DEFAULT_MATCH_IOU,
                     img_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """Count matched, missed and spurious instances per class (see the module docstring).

    Args:
        coco_gt: a pycocotools ``COCO`` ground truth; its sorted category ids are classes
            0..K-1.
        results: COCO result entries (``image_id``, ``category_id``, ``score``,
            ``segmentation``); entries without a segmentation are ignored.
        class_names: the K class names (only their number is used).
        score_threshold: predictions scoring below it are left out.
        iou: the least mask IoU of a match.
        img_ids: the images to count (default: every image of ``coco_gt``).

    Returns:
        np.ndarray: the ``(K + 1) x (K + 1)`` ``int64`` matrix; rows are ground-truth classes
        then "spurious", columns predicted classes then "missed".

    Raises:
        ValueError: an entry's ``image_id`` or ``category_id`` is not the ground truth's, or
            the number of categories differs from ``len(class_names)``.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    num_classes = len(class_names)
    if len(cat_ids) != num_classes:
        raise ValueError(f"the ground truth has {len(cat_ids)} categories but {num_classes} "
                         "class names were given")
    to_class = {cid: k for k, cid in enumerate(cat_ids)}
    known = set(coco_gt.getImgIds())
    by_image: Dict[int, List[Dict]] = defaultdict(list)
    for entry in results:
        if "segmentation" not in entry or float(entry["score"]) < score_threshold:
            continue
        if entry["image_id"] not in known:
            raise ValueError(f"result image_id {entry['image_id']} is not an image of the "
                             f"ground truth ({len(known)} images)")
        if entry["category_id"] not in to_class:
            raise ValueError(f"result category_id {entry['category_id']} is not among the "
                             f"ground truth's {cat_ids}")
        by_image[entry["image_id"]].append(entry)
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for image_id in (img_ids if img_ids is not None else sorted(known)):
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if "segmentation" in a]
        preds = by_image.get(image_id, [])
        gt_class = np.array([to_class[a["category_id"]] for a in anns], dtype=np.int64)
        pred_class = np.array([to_class[e["category_id"]] for e in preds], dtype=np.int64)
        pairs: List[Tuple[int, int]] = []
        if anns and preds:
            ious = mask_util.iou(_rles(coco_gt, preds), _rles(coco_gt, anns), [0] * len(anns))
            pairs = match_greedy(ious, [float(e["score"]) for e in preds], iou)
        gt_done = np.zeros(len(anns), dtype=bool)
        pred_done = np.zeros(len(preds), dtype=bool)
        for d, g in pairs:
            matrix[gt_class[g], pred_class[d]] += 1
            gt_done[g] = pred_done[d] = True
        np.add.at(matrix[:, num_classes], gt_class[~gt_done], 1)
        np.add.at(matrix[num_classes], pred_class[~pred_done], 1)
    return matrix


def confusion_labels(class_names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """The row labels (classes, then "spurious") and column labels (classes, then "missed")
    of :func:`confusion_matrix`'s matrix."""
    names = [str(n) for n in class_names]
    return names + [SPURIOUS], names + [MISSED]


def format_confusion(matrix: np.ndarray, class_names: Sequence[str]) -> str:
    """The matrix as a text table (rows: ground truth; columns: prediction), for logs."""
    rows, cols = confusion_labels(class_names)
    body = [[label] + [int(v) for v in line] for label, line in zip(rows, matrix)]
    return tabulate(body, headers=["ground truth \\ predicted", *cols], tablefmt="pipe")
