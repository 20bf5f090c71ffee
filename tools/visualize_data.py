#!/usr/bin/env python
"""Draw a dataset's ground truth: one PNG per image, instances in their class colors.

Examples:
    # a dataset root in the course layout (reads ROOT/train) or a split folder
    python tools/visualize_data.py /path/to/hw3-data --out pictures/train --sample 8
    python tools/visualize_data.py ../shared/data/consep --split test --out pictures/consep \\
        --class-names other,inflammatory,epithelial,spindle
    # a registered dataset (a config's cells_val)
    python tools/visualize_data.py cells_val --config-file configs/X.yaml --out pictures/val
"""

import argparse
import logging
import sys

from seg_project import visualization
from seg_project.utils.cli import add_debug_argument, run_tool


def main(argv=None) -> int:
    """Parse the command line, draw the pictures; returns the exit status (0, or 2 for bad
    input, printed as one ``error: <file or key>: <problem>`` line)."""
    return run_tool(_main, argv, expected=(ValueError,))


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", metavar="ROOT_OR_DATASET",
                        help="dataset root (course layout), split folder, or registered "
                             "dataset name (cells_train, cells_val, cells_trainval)")
    visualization.add_picture_arguments(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    written = visualization.visualize_dataset(args.source, **visualization.picture_options(args))
    print(f"wrote {len(written)} picture(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
