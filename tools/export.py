#!/usr/bin/env python
"""Export the cells of an existing results file as GeoJSON, label TIFFs or the course layout,
without running the model again.

The cells of an image are its detections scoring at least the threshold, one per nucleus (the
overlap rule): the threshold is --score-threshold, else the operating point of --run
(TEST.OPERATING_POINT in its config.yaml, or its operating_point.json), else 0.5; the rule and
the class names are --run's (its config.yaml), else the defaults.

Examples:
    python tools/export.py --results output/submission/test-results.json \
        --images datasets/cells/test_release --id-map datasets/cells/test_image_name_to_ids.json \
        --format geojson label-tiff --out output/exports --run output/mask_rcnn_R_50_FPN_cells
    python tools/export.py --results test-results.zip --images test_release --format geojson \
        --out exports --score-threshold 0.4 --class-names other inflammatory epithelial spindle
"""

import argparse
import sys

from seg_project.export.formats import EXPORT_FORMATS
from seg_project.export.geojson import OBJECT_TYPES
from seg_project.utils.cli import add_debug_argument, number_from_0_to_1, run_tool


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, metavar="JSON",
                        help="test-results.json (or its zip), or coco_instances_results.json")
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="the folder of the images the results are of")
    parser.add_argument("--id-map", metavar="JSON",
                        help="test_image_name_to_ids.json (else ids 1..n follow sorted file "
                             "names, as tools/predict.py gives them)")
    parser.add_argument("--format", nargs="+", choices=EXPORT_FORMATS, required=True,
                        help="geojson = geojson/<image>.geojson for QuPath; label-tiff = "
                             "labels/<image>_instances.tif, _classes.tif and _labels.json; "
                             "course = course/<image>/image.tif + classN.tif")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--run", metavar="RUN_DIR",
                        help="the training run the results are of: its operating point, "
                             "overlap rule and class names")
    parser.add_argument("--score-threshold", type=number_from_0_to_1, metavar="T",
                        help="the cells' score threshold (default: --run's operating point, "
                             "else 0.5)")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="names of classes 1..K (default: --run's, else class1..classK)")
    parser.add_argument("--object-type", choices=OBJECT_TYPES, default=OBJECT_TYPES[0],
                        help="QuPath object type of the geojson features: detection (default) "
                             "or annotation (editable)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    add_debug_argument(parser)
    return parser


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from seg_project.config import read_config_dict
    from seg_project.data.instance_map import DEFAULT_RULE, OverlapRule
    from seg_project.data.score_threshold import resolve_score_threshold
    from seg_project.export.from_results import export_results_file
    from seg_project.utils.run_files import CONFIG_FILE

    config, class_names = None, args.class_names
    if args.run:
        config = read_config_dict(Path(args.run) / CONFIG_FILE)
        if class_names is None:
            class_names = ((config.get("DATASETS") or {}).get("CELLS") or {}).get("CLASS_NAMES")
    rule = OverlapRule.from_config(config) if config is not None else DEFAULT_RULE
    threshold = resolve_score_threshold(args.score_threshold, config, args.run,
                                        flag="--score-threshold")
    print(f"Cells: {threshold.describe()}; {rule.describe()}")
    written = export_results_file(args.results, args.images, args.out, args.format,
                                  id_map=args.id_map, class_names=class_names,
                                  score_threshold=threshold.value, rule=rule,
                                  object_type=args.object_type, overwrite=args.overwrite)
    print(f"wrote {len(written)} file(s) to {args.out}")
    return 0


def main(argv=None) -> int:
    """Run the tool; returns the exit status (0, or 2 for bad input, printed as one line)."""
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
