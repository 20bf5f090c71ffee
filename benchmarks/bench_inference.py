"""Seconds per test image: ours (seg_project) vs torchvision v2 (the report's) and v1.

CoNSeP test images (1000x1000; the ones whose instance counts lie closest to the split's
median) resized to S x S (512 and 800), with at most 100 and at most 1,000 detections per
image at score threshold 0 (ours: ``TEST.DETECTIONS_PER_IMAGE``,
``ROI_HEADS.SCORE_THRESH_TEST``; torchvision: ``box_detections_per_img``,
``box_score_thresh``). Models are random-init, so the number of detections each really
returned is reported next to its cap. Each pipeline ends in what a submission needs: one
entry per detection with its box, score, class and its mask as COCO RLE at the image's
original size.

What a timed call holds (the uint8 RGB image in, on the CPU, to entries out):

- ours: ``seg_project.inference.predictor.Predictor.predict_image``: resize, the model (RPN with
  ``MODEL.RPN.POST_NMS_TOPK_TEST`` proposals from the project's base config: 2,000, where
  torchvision keeps 1,000), then ``postprocess_to_rle``: each mask pasted only inside its box
  and encoded from that crop by ``seg_project.data.rle``. Ours never builds full-size masks.
- torchvision, "to full masks": ``model([image])`` (its own resize, the model, its
  postprocess pasting every mask into a full-size 1000 x 1000 map), thresholded at 0.5, on
  the CPU; "to RLE": that, plus each full-size mask encoded by ``pycocotools.mask.encode``
  (``torchvision_reference.to_coco_entries``, as the report would).

"ours / this" divides ours by this pipeline's "to RLE" time (the same output); "ours / this
(full masks)" by its "to full masks" time (a stricter comparison: ours does more work).
On CUDA both sides infer in float32 (AMP is the report's training setting; training runs
with it). The models are built once per size; one untimed warm-up call per pipeline on the
first image at the first cap; then the caps are set on the models, and the pipelines take
turns image by image.

Run: ``python benchmarks/bench_inference.py [--quick] [--device cpu] [--sizes 512 800]``.
"""

import argparse
import gc
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from common import (
    PIPELINES,
    PeakMemory,
    Stopwatch,
    add_common_args,
    describe_images,
    format_bytes,
    load_consep,
    ours_config,
    resolve_device,
    seed_everything,
    select_images,
)
from torchvision_reference import build_model, predict, to_coco_entries
from tqdm import tqdm

from seg_project.data.image_io import read_image

TITLE = "Inference: seconds per image, to submission entries (RLE masks at original size)"
FULL, RLE = "to full masks", "to RLE"


class OursPredictor:
    """The project's ``Predictor`` on the random-init model of :func:`common.ours_config`."""

    def __init__(self, size: int, max_dets: int, device: torch.device):
        from seg_project.inference.predictor import Predictor

        self.device = device
        self.predictor = Predictor(ours_config(size, device, max_dets=max_dets), weights="")

    def set_max_detections(self, max_dets: int) -> None:
        """What ``TEST.DETECTIONS_PER_IMAGE`` sets, on the built model."""
        self.predictor.model.model.roi_heads.box_predictor.test_topk_per_image = max_dets

    def __call__(self, image: np.ndarray):
        """``(entries, {"to RLE": seconds})``."""
        with Stopwatch(self.device) as watch:
            entries = self.predictor.predict_image(image)
        return entries, {RLE: watch.wall}


class TorchvisionPredictor:
    """The report's inference: a random-init torchvision model in eval mode, score threshold
    0, then its full-size masks encoded to RLE."""

    def __init__(self, version: str, size: int, max_dets: int, device: torch.device):
        self.device = device
        self.model = build_model(version, size, detections_per_img=max_dets, score_thresh=0.0)
        self.model.to(device).eval()

    def set_max_detections(self, max_dets: int) -> None:
        """What ``box_detections_per_img`` sets, on the built model."""
        self.model.roi_heads.detections_per_img = max_dets

    def __call__(self, image: np.ndarray):
        """``(entries, {"to full masks": seconds, "to RLE": seconds})``."""
        with Stopwatch(self.device) as full:
            output = predict(self.model, image, self.device)
        with Stopwatch() as encode:
            entries = to_coco_entries(output)
        return entries, {FULL: full.wall, RLE: full.wall + encode.wall}


def build_predictor(name: str, size: int, max_dets: int, device: torch.device, seed: int):
    """The pipeline ``name`` ("ours", "v1" or "v2") at input size ``size``."""
    seed_everything(seed)
    if name == "ours":
        return OursPredictor(size, max_dets, device)
    return TorchvisionPredictor(name, size, max_dets, device)


def _measure(predictors: Dict, images: Sequence[np.ndarray], device: torch.device,
             progress: tqdm) -> Dict[str, Dict[str, list]]:
    """Round-robin over the pipelines for each image (starting pipeline rotated)."""
    stats = {name: {FULL: [], RLE: [], "cpu": [], "dets": [], "peak": []}
             for name in predictors}
    names = list(predictors)
    for index, image in enumerate(images):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            with PeakMemory(device) as memory, Stopwatch(device) as watch:
                entries, times = predictors[name](image)
            for phase, seconds in times.items():
                stats[name][phase].append(seconds)
            stats[name]["cpu"].append(watch.cpu)
            stats[name]["dets"].append(len(entries))
            stats[name]["peak"].append(memory.peak_bytes)
            del entries
            progress.set_postfix_str(f"{name}: {watch.wall:.1f} s")
            progress.update()
    return stats


def _median(values: list) -> Optional[float]:
    return statistics.median(values) if values else None


def _rows(size: int, max_dets: int, stats: Dict[str, Dict[str, list]]) -> List[Dict]:
    ours = _median(stats["ours"][RLE]) if "ours" in stats else None
    rows = []
    for name, values in stats.items():
        full, rle = _median(values[FULL]), _median(values[RLE])
        peaks = [p for p in values["peak"] if p is not None]
        rows.append({
            "size": f"{size}x{size}",
            "max dets": max_dets,
            "pipeline": PIPELINES[name],
            "s/image to full masks": full,
            "s/image to RLE": rle,
            "CPU s/image": _median(values["cpu"]),
            "images": len(values[RLE]),
            "images/s": 1.0 / rle,
            "ours / this": None if ours is None else ours / rle,
            "ours / this (full masks)": None if ours is None or full is None else ours / full,
            "detections/image": f"{min(values['dets'])}-{max(values['dets'])}",
            "peak memory": format_bytes(max(peaks) if peaks else None),
        })
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="input sizes S (default 512 800; --quick: 512)")
    parser.add_argument("--max-dets", type=int, nargs="+", default=[100, 1000],
                        help="detection caps per image (default 100 1000)")
    parser.add_argument("--images", type=int, default=None,
                        help="measured test images per setting (default 2; quick 1)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls per pipeline and size before measuring "
                             "(default 1; quick 0)")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES),
                        choices=list(PIPELINES), help="which pipelines to run")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([512] if args.quick else [512, 800])
    args.images = args.images if args.images is not None else (1 if args.quick else 2)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    if args.images < 1 or args.warmup < 0 or min(args.max_dets) < 1:
        parser.error("--images and --max-dets must be >= 1 and --warmup >= 0")
    return args


def run(argv=None, notes: Optional[List[str]] = None) -> List[Dict]:
    """Run the inference benchmark; returns one row per (size, cap, pipeline).

    Args:
        argv: command-line arguments (see ``--help``); default ``sys.argv[1:]``.
        notes: if given, lines describing the run (images used, settings) are appended.
    """
    args = parse_args(argv)
    device = resolve_device(args.device)
    test = load_consep(args.data, "test")
    records = select_images(test, args.images)
    images = [read_image(r["file_name"]) for r in records]
    settings = [
        f"Images ({len(records)} of {len(test)} CoNSeP test, instances in brackets): "
        f"{describe_images(records)}; {args.warmup} warm-up call(s) per pipeline and size.",
    ]
    print("\n".join(settings), file=sys.stderr)
    if notes is not None:
        notes.extend(settings)
    per_size = len(args.pipelines) * (args.warmup + len(images) * len(args.max_dets))
    progress = tqdm(total=per_size * len(args.sizes), desc="inference calls", leave=False)
    rows = []
    for size in args.sizes:
        predictors = {name: build_predictor(name, size, args.max_dets[0], device, args.seed)
                      for name in args.pipelines}
        for _ in range(args.warmup):
            for predictor in predictors.values():
                predictor(images[0])
                progress.update()
        for max_dets in args.max_dets:
            for predictor in predictors.values():
                predictor.set_max_detections(max_dets)
            stats = _measure(predictors, images, device, progress)
            rows.extend(_rows(size, max_dets, stats))
        del predictors
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    progress.close()
    return rows


def main(argv=None) -> List[Dict]:
    """Run and print the table."""
    from common import run_and_print

    return run_and_print(run, TITLE, argv)


if __name__ == "__main__":
    main()
