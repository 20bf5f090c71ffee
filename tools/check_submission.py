#!/usr/bin/env python
"""Check a grader submission (test-results.json, or a zip holding it) before uploading it.

Usage:
    python tools/check_submission.py test-results.json --id-map test_image_name_to_ids.json
    python tools/check_submission.py submission.zip --id-map ids.json --num-classes 4 \\
        --bbox-format xyxy --require-all

Prints a report (errors first); exits 0 when the submission is valid, 1 otherwise.
"""

import argparse
import sys

from seg_project.data.image_io import DatasetError
from seg_project.evaluation.submission import check_submission, format_report


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", help="test-results.json, or a .zip holding it")
    parser.add_argument("--id-map", required=True,
                        help="test_image_name_to_ids.json (image ids and sizes)")
    parser.add_argument("--num-classes", type=_positive_int, default=4,
                        help="number of classes K; category ids must be 1..K (default 4)")
    parser.add_argument("--bbox-format", choices=("auto", "xywh", "xyxy"), default="auto",
                        help="bbox layout: COCO [x, y, w, h], [x1, y1, x2, y2], or auto "
                             "(the one the masks fit; default)")
    parser.add_argument("--require-all", action="store_true",
                        help="make an image without any entry an error")
    return parser


def main(argv=None) -> int:
    """Run the check; return the exit status (0 valid, 1 errors or unreadable input)."""
    args = build_parser().parse_args(argv)
    try:
        report = check_submission(args.submission, args.id_map, args.num_classes,
                                  bbox_format=args.bbox_format,
                                  require_all_images=args.require_all)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
