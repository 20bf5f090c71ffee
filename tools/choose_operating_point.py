#!/usr/bin/env python
"""Choose a training run's operating point: the score threshold at which its cells have the
highest PQ on an evaluated split.

Reads RUN_DIR/inference/<dataset>/coco_instances_results.json (the run's last evaluation of
the dataset; the model is not run again) and the dataset's ground truth, scores the cells
(detections at or above each threshold of TEST.OPERATING_POINT.GRID, painted under the run's
overlap rule TEST.INSTANCE_MAP) and writes RUN_DIR/operating_point.json (the grid, the choice,
the dataset, the rule) and TEST.OPERATING_POINT.* into RUN_DIR/config.yaml. Training does the
same at its end on DATASETS.TEST[0]; the pathology metrics, exports, pictures and report then
use the chosen threshold by default.

Examples:
    python tools/choose_operating_point.py output/mask_rcnn_R_50_FPN_cells
    python tools/choose_operating_point.py output/run --dataset cells_val --dry-run
"""

import argparse
import logging
import sys

from seg_project.utils.cli import add_debug_argument, run_tool


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="the training run folder (config.yaml, inference/<dataset>/)")
    parser.add_argument("--dataset", metavar="NAME",
                        help="the evaluated dataset to choose on (default: the run's "
                             "DATASETS.TEST[0])")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the grid and the choice, write nothing")
    add_debug_argument(parser)
    return parser


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from seg_project.evaluation.operating_point import choose_operating_point, format_grid

    point = choose_operating_point(args.run_dir, args.dataset, record=not args.dry_run)
    print(format_grid(point))
    if not args.dry_run:
        print(f"written: {args.run_dir}/operating_point.json and TEST.OPERATING_POINT in its "
              "config.yaml")
    return 0


def main(argv=None) -> int:
    """Run the tool; returns the exit status (0, or 2 for bad input, printed as one line)."""
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
