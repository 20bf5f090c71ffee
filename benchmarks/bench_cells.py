"""One cell per nucleus, measured: what the overlap rule and a chosen score threshold do to
the pathology metrics of one set of predictions, without running the model again.

The cells of an image are its detections scoring at least a threshold, painted into one
instance map under an overlap rule (``seg_project.data.instance_map``). For a results file
and its ground truth this prints:

1. four settings side by side: score >= 0.5 without the rule (what the project reported
   before), 0.5 with the rule, the chosen threshold without the rule, and both; PQ, DQ, SQ,
   AJI, mPQ, F1 and the cells counted, with the file's grader-exact and high-cap AP50 beside
   them (the same in every row: the submission keeps every detection, per class);
2. with ``--rule-grid``: every rule of F (least visible fraction) in 0, 0.3, 0.5, 0.7 and T
   (most mask IoU with a higher-scored kept cell) in off, 0.3, 0.5, 0.7, at 0.5 and at the
   chosen threshold: the table the default rule (``TEST.INSTANCE_MAP``) is chosen from.

The threshold is chosen on the grid 0.05..0.95 for the highest PQ. When the images it is
chosen on are the images it is reported on (a test split), the figure is optimistic, so it is
**cross-validated**: the images are split in two halves (image-id order, alternating), each
half is scored at the threshold chosen on the other half, and the halves are pooled; the
thresholds chosen per half are printed, and the in-sample best beside them.

Every image is decoded once for all rules and thresholds.

Run:
    python benchmarks/bench_cells.py --results RUN/inference/cells_annotated_test/\\
coco_instances_results.json --gt ../shared/data/consep/test --rule-grid
    python benchmarks/bench_cells.py --run RUN_DIR   # its DATASETS.TEST[0], e.g. the demo's
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from common import markdown_table

from seg_project.data.instance_map import DEFAULT_RULE, NO_RULE, OverlapRule
from seg_project.evaluation.operating_point import (
    best_row,
    choose_across_folds,
    fold_of_images,
    grid_rows,
    merge_folds,
    sweep,
)
from seg_project.evaluation.pathology import PathologyAccumulator

GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
HIGH_CAP = 3000
FRACTIONS = (0.0, 0.3, 0.5, 0.7)
IOUS = (1.0, 0.3, 0.5, 0.7)
FIGURES = ("PQ", "DQ", "SQ", "AJI", "mPQ", "F1")
CONSEP_CLASSES = ["other", "inflammatory", "epithelial", "spindle"]


def rule_grid() -> List[OverlapRule]:
    """The rules of ``--rule-grid``: F x T."""
    return [OverlapRule(f, t) for f in FRACTIONS for t in IOUS]


def _figures(accumulator: PathologyAccumulator) -> Dict[str, float]:
    summary = accumulator.summarize()
    row = {key: summary[key] for key in FIGURES}
    row["cells"] = sum(r["tp"] + r["fp"] for r in accumulator.per_image)
    return row


def measure(coco_gt, entries: List[Dict], class_names: Sequence[str],
            rules: Sequence[OverlapRule], grid: Sequence[float] = GRID,
            folds: int = 2) -> Dict[OverlapRule, Dict]:
    """Per rule: the figures at 0.5, the in-sample best threshold and its figures, and the
    cross-validated figures with the threshold chosen for each fold.

    Returns:
        dict: rule -> ``{"at 0.5": figures, "in-sample": (threshold, figures),
        "cross-validated": (thresholds per fold, figures)}``.
    """
    grid = sorted(set(grid) | {0.5})
    fold = fold_of_images(coco_gt.getImgIds(), folds)
    settings = [(t, rule) for rule in rules for t in grid]
    accumulators = sweep(coco_gt, entries, class_names, settings, sorted(fold),
                         fold.__getitem__, folds)
    out = {}
    for r, rule in enumerate(rules):
        part = [row[r * len(grid):(r + 1) * len(grid)] for row in accumulators]
        merged = merge_folds(part)
        best = best_row(grid_rows(merged))
        pooled, chosen = choose_across_folds(part)
        out[rule] = {"at 0.5": _figures(merged[grid.index(0.5)]),
                     "in-sample": (best["score_threshold"],
                                   _figures(merged[grid.index(best["score_threshold"])])),
                     "cross-validated": (chosen, _figures(pooled))}
    return out


def _thresholds(chosen: Sequence[float]) -> str:
    return " / ".join(f"{t:g}" for t in chosen)


def four_rows(measured: Dict[OverlapRule, Dict], rule: OverlapRule,
              ap: Optional[Dict[str, float]] = None) -> List[Dict]:
    """The four settings (see the module docstring) as table rows; ``measured`` must hold
    :data:`NO_RULE` and ``rule``."""
    ap = ap or {}
    rows = []
    for name, chosen_rule, chosen in (("0.5, no rule (before)", NO_RULE, False),
                                      ("0.5, rule", rule, False),
                                      ("chosen, no rule", NO_RULE, True),
                                      ("chosen + rule", rule, True)):
        info = measured[chosen_rule]
        if chosen:
            thresholds, figures = info["cross-validated"]
            threshold = f"{_thresholds(thresholds)} (cross-validated)"
        else:
            threshold, figures = "0.5", info["at 0.5"]
        rows.append({"setting": name, "overlaps": chosen_rule.describe().split(": ", 1)[1],
                     "score >=": threshold, **figures, **ap})
    return rows


def grid_table_rows(measured: Dict[OverlapRule, Dict]) -> List[Dict]:
    """One row per rule: PQ at 0.5, in-sample best, cross-validated figures."""
    rows = []
    for rule, info in measured.items():
        best_t, best = info["in-sample"]
        chosen, cv = info["cross-validated"]
        rows.append({"F (least visible)": rule.min_visible_fraction,
                     "T (most IoU)": "off" if rule.max_mask_iou >= 1 else rule.max_mask_iou,
                     "PQ @0.5": info["at 0.5"]["PQ"], "cells @0.5": info["at 0.5"]["cells"],
                     "best t (in-sample)": best_t, "PQ (in-sample)": best["PQ"],
                     "t per half": _thresholds(chosen), "PQ (cv)": cv["PQ"],
                     "DQ (cv)": cv["DQ"], "SQ (cv)": cv["SQ"], "mPQ (cv)": cv["mPQ"],
                     "AJI (cv)": cv["AJI"], "cells (cv)": cv["cells"]})
    return rows


def ap_of(coco_gt, entries: List[Dict], class_names: Sequence[str],
          high_cap: int = HIGH_CAP) -> Dict[str, float]:
    """The grader-exact and high-cap segm AP50 of the entries (every detection, per class)."""
    from seg_project.evaluation.coco import evaluate_coco_tasks

    segm = evaluate_coco_tasks(coco_gt, entries, class_names, high_cap=high_cap)["segm"]
    return {"AP50 (grader)": segm["AP50"], f"AP50 @{high_cap}": segm[f"AP50@{high_cap}"]}


def load(args):
    """(coco_gt, entries, class names, where) of ``--results``/``--gt`` or of ``--run``."""
    from seg_project.evaluation.results_file import ground_truth, load_results_xywh
    from seg_project.utils.run_files import results_file

    if args.run:
        from seg_project.config import register_run_datasets

        cfg = register_run_datasets(args.run)
        dataset = args.dataset or cfg.DATASETS.TEST[0]
        results = results_file(args.run, dataset)
        coco_gt, names = ground_truth(dataset, list(cfg.DATASETS.CELLS.CLASS_NAMES))
        where = f"{args.run} ({dataset})"
    else:
        results = Path(args.results)
        coco_gt, names = ground_truth(args.gt, args.class_names)
        where = f"{results} against {args.gt}"
    entries, _ = load_results_xywh(results)
    return coco_gt, entries, names, where


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", help="a results file (with --gt)")
    source.add_argument("--run", help="a run folder: its last evaluation of --dataset")
    parser.add_argument("--gt", help="the annotated folder of --results (course layout)")
    parser.add_argument("--dataset", help="with --run: the dataset (default DATASETS.TEST[0])")
    parser.add_argument("--class-names", nargs="+", default=CONSEP_CLASSES,
                        help="with --gt: names of classes 1..K (default CoNSeP's)")
    parser.add_argument("--min-visible", type=float, default=DEFAULT_RULE.min_visible_fraction,
                        help="F of the rule of the four-row table (default: the config's)")
    parser.add_argument("--max-iou", type=float, default=DEFAULT_RULE.max_mask_iou,
                        help="T of the rule of the four-row table (1: off; default: the "
                             "config's)")
    parser.add_argument("--rule-grid", action="store_true",
                        help="also every rule of F x T (16 rules)")
    parser.add_argument("--folds", type=int, default=2, help="cross-validation folds (2)")
    args = parser.parse_args(argv)
    if args.results and not args.gt:
        parser.error("--results needs --gt")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    coco_gt, entries, names, where = load(args)
    rule = OverlapRule(args.min_visible, args.max_iou)
    rules = list(dict.fromkeys([NO_RULE, rule] + (rule_grid() if args.rule_grid else [])))
    measured = measure(coco_gt, entries, names, rules, folds=args.folds)
    images = len(coco_gt.getImgIds())
    print(f"\n### The cells of {where}: {images} images, {len(entries)} detections\n")
    print(markdown_table(four_rows(measured, rule, ap_of(coco_gt, entries, names))))
    print(f"\nChosen: the threshold of highest PQ on the grid {GRID[0]}..{GRID[-1]}, "
          f"{args.folds}-fold cross-validated (each half of the images scored at the threshold "
          "chosen on the other; thresholds per half shown). In-sample best: "
          + ", ".join(f"{r.describe()}: {measured[r]['in-sample'][0]:g} (PQ "
                      f"{measured[r]['in-sample'][1]['PQ']:.4f})" for r in (NO_RULE, rule)))
    if args.rule_grid:
        print("\n### Overlap rules (F: least visible fraction, T: most mask IoU)\n")
        print(markdown_table(grid_table_rows({r: measured[r] for r in rule_grid()})))
    print(f"\nbench_cells: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

