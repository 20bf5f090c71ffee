#!/usr/bin/env python
"""Statistics of a dataset in the course layout: images, instances per class and per image,
instance areas, image sizes, images without instances.

    python tools/dataset_stats.py ROOT                       # ROOT/train/, as a table
    python tools/dataset_stats.py ROOT --split test --json   # ROOT/train/ and ROOT/test/, JSON

With --json the train split's figures are top-level keys ("images", "instances_per_class",
...) and "splits" holds every reported split by name (see seg_project/data/stats.py).
Bad input prints the file and the problem to stderr and exits with code 2.
"""

import argparse
import sys

from seg_project.utils.cli import add_debug_argument, run_tool, whole_number_at_least


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="dataset root holding train/<name>/image.tif, classN.tif")
    parser.add_argument("--split", action="append", default=[], metavar="NAME",
                        help="another annotated folder of ROOT to report too, e.g. test "
                             "(repeatable; train/ is always reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--num-classes", type=whole_number_at_least(1), default=4, metavar="K",
                        help="number of classes: mask files are class1.tif..classK.tif "
                             "(default 4)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="conversion cache folder, or 'off' (default: $SEG_PROJECT_CACHE "
                             "or ~/.cache/seg_project)")
    add_debug_argument(parser)
    return parser


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    from seg_project.data.stats import report  # after the command line: --help answers at once

    cache_dir = False if args.cache_dir == "off" else args.cache_dir
    return report(args.root, args.split, args.num_classes, as_json=args.json,
                  cache_dir=cache_dir, progress=True)


def main(argv=None) -> int:
    """Print the statistics; returns the exit status (0, or 2 for bad input)."""
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
