#!/usr/bin/env python
"""Write one self-contained HTML report of a training run: settings, training curves, the
final metrics, the class confusion matrix and the best and worst validation images.

The page goes to RUN_DIR/report.html (replaced at each call: it is the tool's own output) or
to --out FILE (an existing FILE is replaced only with --overwrite). Pictures are embedded, so
the one file can be mailed or archived. Sections that cannot be made (no evaluation yet, the
dataset moved...) say why; only a missing or unreadable RUN_DIR/metrics.json is an error.

Examples:
    python tools/report.py output/mask_rcnn_R_50_FPN_cells
    python tools/report.py output/quick --out reports/quick.html --worst 5 --overwrite
"""

import argparse
import logging
import sys


def main(argv=None) -> int:
    """Run the tool; returns the exit status (0 on success, 2 on bad input, printed as one
    ``error: <file>: <problem>`` line)."""
    from seg_project.utils.cli import run_tool

    return run_tool(_main, argv)


def _main(argv) -> int:
    from seg_project.utils.cli import add_debug_argument

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the training run folder "
                        "(OUTPUT_DIR: metrics.json, config.yaml, inference/...)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="the HTML file (default: RUN_DIR/report.html, replaced)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="the evaluated dataset to show (default: the first of the "
                             "config's DATASETS.TEST with predictions in RUN_DIR/inference)")
    parser.add_argument("--worst", type=int, default=3, metavar="N",
                        help="show the best and the worst N images by PQ (default 3)")
    parser.add_argument("--score-threshold", type=float, default=None, metavar="T",
                        help="the cells' score threshold: confusion matrix, per-image "
                             "metrics and pictures (default: TEST.PATHOLOGY.SCORE_THRESHOLD if "
                             "set, else the run's operating point, else 0.5)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.worst < 1:
        parser.error("--worst must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from seg_project.analysis.report import write_report

    path = write_report(args.run_dir, args.out, dataset=args.dataset, worst=args.worst,
                        score_threshold=args.score_threshold, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
