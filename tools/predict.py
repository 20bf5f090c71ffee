#!/usr/bin/env python
"""Predict test images with a trained model and write the submission file.

Examples:
    python tools/predict.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml \
        --weights output/mask_rcnn_R_50_FPN_cells/model_best.pth \
        --images datasets/cells/test_release --id-map datasets/cells/test_image_name_to_ids.json \
        --out output/submission --zip
    python tools/predict.py --config-file ... --weights ... --images a.tif b.tif --out preds

The submission (coco) keeps every detection; the per-image exports (geojson, label-tiff,
course) hold the cells: the detections at or above --export-threshold (default: the run's
operating point, operating_point.json beside --weights), one per nucleus (the overlap rule
of TEST.INSTANCE_MAP). One run thus gives a complete submission and clean exports.

Inputs (every image read once: readable, within the pixel limit, a supported shape, channels
and colour mode), the output folder and the weights are checked before any inference; bad ones
stop it with ``error: <file or key>: <problem>`` and exit status 2. Outputs are moved into
``--out`` only when all are written: an error or a Ctrl-C (exit status 130) leaves it as it was.
"""

import argparse
import sys

import seg_project  # noqa: F401  (registers datasets when Detectron2 loads, quiets warnings)
from seg_project.export.formats import FORMATS
from seg_project.export.geojson import OBJECT_TYPES
from seg_project.utils.cli import add_debug_argument, number_from_0_to_1, run_tool


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="the training config")
    parser.add_argument("--weights", required=True, help="model_best.pth, model_final.pth, ...")
    parser.add_argument("--images", required=True, nargs="+",
                        help="a folder of images, or image files")
    parser.add_argument("--id-map", help="test_image_name_to_ids.json (else ids follow sorted "
                                         "file names)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--bbox-format", choices=("xywh", "xyxy"), default="xywh",
                        help="COCO [x, y, w, h] (default) or [x1, y1, x2, y2]")
    parser.add_argument("--zip", action="store_true", help="also write test-results.zip")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["coco"],
                        help="output formats, several allowed: coco = test-results.json "
                             "(default); geojson = geojson/<image>.geojson for QuPath; "
                             "label-tiff = labels/<image>_instances.tif and _classes.tif; "
                             "course = course/<image>/image.tif + classN.tif (a dataset in the "
                             "course layout, to correct by hand)")
    parser.add_argument("--object-type", choices=OBJECT_TYPES, default=OBJECT_TYPES[0],
                        help="QuPath object type of the geojson features: detection (default; "
                             "light, not editable) or annotation (editable by curators)")
    parser.add_argument("--score-threshold", type=float,
                        help="the submission's detections (default: the config's "
                             "MODEL.ROI_HEADS.SCORE_THRESH_TEST)")
    parser.add_argument("--export-threshold", type=number_from_0_to_1,
                        help="the cells of --format geojson/label-tiff/course (default: "
                             "TEST.PATHOLOGY.SCORE_THRESHOLD if set, else the run's operating "
                             "point beside --weights, else 0.5)")
    parser.add_argument("--max-detections", type=int, help="per image; default: the config's")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: flips and TEST.AUG.MIN_SIZES scales")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing test-results.json in --out")
    add_debug_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    # Detectron2 and torch load after the command line is read (--help answers at once).
    from seg_project.config import load_config, register_datasets_from_config
    from seg_project.data.instance_map import OverlapRule
    from seg_project.data.score_threshold import resolve_score_threshold
    from seg_project.inference.predict import (
        check_images,
        check_outputs,
        resolve_inputs,
        run_prediction,
    )
    from seg_project.inference.predictor import Predictor

    cfg = load_config(args.config_file, args.opts)
    register_datasets_from_config(cfg)  # checks the class names against the class count
    formats = list(dict.fromkeys(args.format))
    job = resolve_inputs(args.images, args.id_map)
    check_outputs(args.out, args.zip, args.overwrite, formats,
                  [path for _, path, _, _ in job.images])
    check_images(job)
    print(f"{len(job.images)} images; ids from {job.id_source}")
    rule = OverlapRule.from_config(cfg)
    export_threshold = resolve_score_threshold(args.export_threshold, cfg, args.weights,
                                               flag="--export-threshold")
    if set(formats) - {"coco"}:
        print(f"Exported cells: {export_threshold.describe()}; {rule.describe()}")
    predictor = Predictor(cfg, weights=args.weights, device=args.device, tta=args.tta,
                          score_threshold=args.score_threshold,
                          max_detections=args.max_detections)
    job = run_prediction(predictor, job, args.out, bbox_format=args.bbox_format,
                         make_zip=args.zip, batch_size=args.batch_size,
                         overwrite=args.overwrite, formats=formats,
                         object_type=args.object_type,
                         export_threshold=export_threshold.value, overlap_rule=rule)
    print(job.report)
    if job.images_without_detections:
        print(f"{len(job.images_without_detections)} image(s) without any detection: ids "
              f"{job.images_without_detections[:20]}")
    print(job.capped or f"No image reached TEST.DETECTIONS_PER_IMAGE "
                        f"({predictor.cfg.TEST.DETECTIONS_PER_IMAGE} detections)")
    print("written: " + ", ".join(str(p) for p in job.written))
    return 0


def main(argv=None) -> int:
    """Run the tool; returns the exit status (0, or 2 for bad input, printed as one line)."""
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
