#!/usr/bin/env python
"""Draw predictions, from a COCO results JSON or from a trained model, one PNG per image.

With a dataset that has ground truth (--dataset cells_val, or --gt-root ROOT), each picture
shows the ground truth (left) and the predictions (right), double width. The predictions
drawn are the cells: those scoring at least the threshold, one per nucleus (the overlap rule
of the config's TEST.INSTANCE_MAP, else the default), each with the pixels the pathology
metrics and the exports give it.

Examples:
    # a results JSON (e.g. test-results.json) over the test images; image ids from the
    # mapping file, or 1..n in sorted file-name order without --id-map
    python tools/visualize.py --results test-results.json --images data/test_release \\
        --id-map data/test_image_name_to_ids.json --out pictures/test
    # a model's predictions next to the validation ground truth
    python tools/visualize.py --config-file configs/X.yaml --weights output/model_final.pth \\
        --dataset cells_val --out pictures/val --sample 5
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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", metavar="JSON", help="COCO results JSON to draw")
    source.add_argument("--weights", metavar="PTH",
                        help="model checkpoint to run (needs --config-file)")
    parser.add_argument("--images", nargs="+", default=None, metavar="DIR_OR_FILES",
                        help="image folder (or, with --weights, image files)")
    parser.add_argument("--id-map", default=None, metavar="JSON",
                        help="test_image_name_to_ids.json: image ids of --images (default: "
                             "1..n in sorted file-name order)")
    parser.add_argument("--dataset", default=None,
                        help="registered dataset with ground truth (e.g. cells_val)")
    parser.add_argument("--gt-root", default=None, metavar="ROOT",
                        help="course-layout folder with ground truth (ROOT/--split is read)")
    parser.add_argument("--bbox-format", choices=visualization.BBOX_FORMATS, default="auto",
                        help="box layout in --results (default auto: compared with the masks)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="draw predictions scoring at least this (default: the config's "
                             "TEST.PATHOLOGY.SCORE_THRESHOLD if set, else the run's operating "
                             "point, in its config.yaml or beside --weights, else 0.5)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, ... (default: the config's MODEL.DEVICE)")
    visualization.add_picture_arguments(parser)
    add_debug_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="overrides of --config-file, e.g. DATASETS.CELLS.ROOT /data/cells")
    args = parser.parse_args(argv)
    if args.weights and not args.config_file:
        parser.error("--weights needs --config-file")
    if args.weights and args.id_map:
        parser.error("--id-map only applies to --results")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    options = visualization.picture_options(args)
    options.update(images=args.images, dataset=args.dataset, gt_root=args.gt_root,
                   score_threshold=args.score_threshold)
    if args.results:
        options.update(id_map=args.id_map, bbox_format=args.bbox_format)
        written = visualization.visualize_results(args.results, **options)
    else:
        written = visualization.visualize_model(args.weights, device=args.device, **options)
    print(f"wrote {len(written)} picture(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
