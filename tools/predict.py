#!/usr/bin/env python
"""Predict test images with a trained model and write the submission file.

Examples:
    python tools/predict.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml \
        --weights output/mask_rcnn_R_50_FPN_cells/model_best.pth \
        --images datasets/cells/test_release --id-map datasets/cells/test_image_name_to_ids.json \
        --out output/submission --zip
    python tools/predict.py --config-file ... --weights ... --images a.tif b.tif --out preds
"""

import seg_project  # noqa: F401, I001  (first: registers datasets, quiets import warnings)
import argparse
import sys

from seg_project.config import get_seg_project_cfg, register_datasets_from_config
from seg_project.data.image_io import DatasetError
from seg_project.engine.checkpointer import WeightsNotFoundError
from seg_project.inference import Predictor
from seg_project.predict import resolve_inputs, run_prediction


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
    parser.add_argument("--score-threshold", type=float, help="default: the config's")
    parser.add_argument("--max-detections", type=int, help="per image; default: the config's")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: flips and TEST.AUG.MIN_SIZES scales")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing test-results.json in --out")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        cfg = get_seg_project_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        register_datasets_from_config(cfg)
        job = resolve_inputs(args.images, args.id_map)
        print(f"{len(job.images)} images; ids from {job.id_source}")
        predictor = Predictor(cfg, weights=args.weights, device=args.device, tta=args.tta,
                              score_threshold=args.score_threshold,
                              max_detections=args.max_detections)
        job = run_prediction(predictor, job, args.out, bbox_format=args.bbox_format,
                             make_zip=args.zip, batch_size=args.batch_size,
                             overwrite=args.overwrite)
    except (DatasetError, WeightsNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(job.report)
    if job.images_without_detections:
        print(f"{len(job.images_without_detections)} image(s) without any detection: ids "
              f"{job.images_without_detections[:20]}")
    print("written: " + ", ".join(str(p) for p in job.written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
