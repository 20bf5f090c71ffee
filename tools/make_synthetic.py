#!/usr/bin/env python
"""Generate a small synthetic cell dataset in the course layout (the demo data).

Usage:
    python tools/make_synthetic.py --out datasets/cells
    python tools/make_synthetic.py --out demo_output/data --num-train 40 --num-test 8 --seed 1
    python tools/make_synthetic.py --out demo_output/data --force   # replace generated files

Writes ``train/<name>/image.tif`` + ``classN.tif``, ``test_release/<uuid>.tif`` and
``test_image_name_to_ids.json`` (see :mod:`seg_project.data.synthetic`) and prints a summary.
"""

import argparse
import sys

from seg_project.utils.cli import add_debug_argument, run_tool


def main(argv=None) -> int:
    """Parse the command line, generate the dataset and print its summary; return 0 or 2."""
    return run_tool(_main, argv, expected=(ValueError,))


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset root to create")
    parser.add_argument("--num-train", type=int, default=12, help="annotated images (12)")
    parser.add_argument("--num-test", type=int, default=4, help="test images (4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--min-size", type=int, default=96, help="smallest image side (96)")
    parser.add_argument("--max-size", type=int, default=192, help="largest image side (192)")
    parser.add_argument("--cells", type=int, nargs=2, default=(8, 30), metavar=("MIN", "MAX"),
                        help="cells drawn per image (8 30)")
    parser.add_argument("--empty-images", type=int, default=0,
                        help="training images without any cell (0)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty folder, replacing only generated files")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    from seg_project.data.synthetic import (  # after the command line: --help answers at once
        format_summary,
        make_synthetic_dataset,
    )

    summary = make_synthetic_dataset(
        args.out, num_train=args.num_train, num_test=args.num_test, seed=args.seed,
        min_size=args.min_size, max_size=args.max_size, cells_per_image=tuple(args.cells),
        empty_images=args.empty_images, overwrite=args.force, progress=True)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
