#!/usr/bin/env python
"""Check a grader submission (test-results.json, or a zip holding it) before uploading it.

Usage:
    python tools/check_submission.py test-results.json --id-map test_image_name_to_ids.json
    python tools/check_submission.py submission.zip --id-map ids.json --num-classes 4 \\
        --bbox-format xyxy --require-all

Prints a report (errors first); exits 0 when the submission is valid, 1 when it is not, and 2
when an input cannot be read (``error: <file>: <problem>`` on stderr).
"""

import argparse
import sys

from seg_project.utils.cli import add_debug_argument, run_tool, whole_number_at_least


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", help="test-results.json, or a .zip holding it")
    parser.add_argument("--id-map", required=True,
                        help="test_image_name_to_ids.json (image ids and sizes)")
    parser.add_argument("--num-classes", type=whole_number_at_least(1), default=4,
                        help="number of classes K; category ids must be 1..K (default 4)")
    parser.add_argument("--bbox-format", choices=("auto", "xywh", "xyxy"), default="auto",
                        help="bbox layout: COCO [x, y, w, h], [x1, y1, x2, y2], or auto "
                             "(the one the masks fit; default)")
    parser.add_argument("--require-all", action="store_true",
                        help="make an image without any entry an error")
    add_debug_argument(parser)
    return parser


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    from seg_project.submission import (  # after the command line: --help answers at once
        check_submission,
        format_report,
    )

    report = check_submission(args.submission, args.id_map, args.num_classes,
                              bbox_format=args.bbox_format, require_all_images=args.require_all)
    print(format_report(report))
    return 0 if report.ok else 1


def main(argv=None) -> int:
    """Run the check; return the exit status (0 valid, 1 invalid, 2 unreadable input)."""
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
