#!/usr/bin/env python
"""Score a results file against annotated data exactly as the course's grader would.

Prints the grader-exact COCO table (pycocotools defaults: at most 100 detections per image and
class), the high-cap table and the pathology table (PQ, AJI, Dice...).

Examples:
    python tools/evaluate.py output/run/inference/cells_val/coco_instances_results.json \
        --config-file configs/mask_rcnn_R_50_FPN_cells.yaml --dataset cells_val \
        DATASETS.CELLS.ROOT /data/hw3
    python tools/evaluate.py test-results.json --gt ../shared/data/consep/test --json

The results file is checked against the ground truth with the submission checker's rules
(image ids and sizes, classes, scores in [0, 1], valid masks, boxes that fit them) and read one
entry at a time, keeping the best entries of each image and class that any figure counts.
Bad input (a missing file, a bad entry, an unknown key) stops it with
``error: <file or key>: <problem>`` and exit status 2.
"""

import argparse
import json
import math
import sys

from seg_project.utils.cli import add_debug_argument, run_tool


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="test-results.json (or its zip), or "
                                        "coco_instances_results.json")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--gt", help="a folder of annotated image folders in the course layout "
                                     "(<folder>/<name>/image.tif + classN.tif)")
    source.add_argument("--dataset", help="a registered dataset (cells_val, "
                                          "cells_annotated_test, ...); with --config-file and "
                                          "overrides for its root and split")
    parser.add_argument("--config-file", help="config whose DATASETS.CELLS.* and TEST.* to use")
    parser.add_argument("--class-names", nargs="+",
                        help="names of classes 1..K for --gt (default: the config's, or "
                             "class1..class4)")
    parser.add_argument("--bbox-format", choices=("auto", "xywh", "xyxy"), default="auto",
                        help="how the file's boxes are laid out (default: auto, from the masks)")
    parser.add_argument("--high-cap", type=int,
                        help="detections per image and class of the high-cap figures "
                             "(default: the config's TEST.DETECTIONS_PER_IMAGE; 1000 without "
                             "--config-file)")
    parser.add_argument("--pathology-threshold", type=float,
                        help="score threshold of the pathology metrics (default: the "
                             "config's TEST.PATHOLOGY.SCORE_THRESHOLD if set, else the "
                             "operating point a run's config.yaml records, else 0.5)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_debug_argument(parser)
    parser.add_argument("opts", nargs="*", help="config overrides: KEY VALUE ...")
    return parser


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _main(argv) -> int:
    args = build_parser().parse_intermixed_args(argv)
    import seg_project  # noqa: F401  (quiets import warnings)
    from seg_project.config import load_config, register_datasets_from_config
    from seg_project.data.instance_map import OverlapRule
    from seg_project.data.score_threshold import resolve_score_threshold
    from seg_project.evaluation.predictions import format_tables
    from seg_project.evaluation.results_file import evaluate_results_file

    cfg = load_config(args.config_file or None, args.opts)
    if args.class_names:
        cfg.DATASETS.CELLS.CLASS_NAMES = list(args.class_names)
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(args.class_names)
    elif not args.config_file:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(cfg.DATASETS.CELLS.CLASS_NAMES)
    register_datasets_from_config(cfg)
    # the project's configs keep 1000 detections per image (Detectron2's own default is 100)
    high_cap = args.high_cap or (cfg.TEST.DETECTIONS_PER_IMAGE if args.config_file else 1000)
    threshold = resolve_score_threshold(args.pathology_threshold, cfg,
                                        flag="--pathology-threshold").value
    cache = cfg.DATASETS.CELLS.CACHE_DIR
    metrics = evaluate_results_file(
        args.results, args.dataset or args.gt, list(cfg.DATASETS.CELLS.CLASS_NAMES),
        bbox_format=args.bbox_format, high_cap=high_cap, fast=cfg.TEST.FAST_COCO_EVAL,
        pathology_threshold=threshold, cache_dir=False if cache == "off" else (cache or None),
        overlap_rule=OverlapRule.from_config(cfg))
    if args.json:  # NaN (nothing to compute, e.g. a class without instances) as null
        print(json.dumps(_nan_to_none(metrics), indent=2, allow_nan=False))
    else:
        info = metrics["input"]
        print(f"{info['entries']} results on {info['images']} images of {info['ground_truth']} "
              f"(boxes read as {info['bbox_format']})\n")
        if info["left_out"]:
            print(f"{info['left_out']} results beyond the best {max(high_cap, 100)} of their "
                  "image and class were left out (no COCO figure counts them; the pathology "
                  "figures leave them out too)\n")
        print(format_tables(metrics, info["class_names"], high_cap))
    return 0


def main(argv=None) -> int:
    """Evaluate and print; returns the exit status (2 for bad input, printed as one line)."""
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
