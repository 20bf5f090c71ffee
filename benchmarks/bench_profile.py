"""Where our training step's time goes, and each optimisation's before/after in one run.

Profile: one training iteration of ours (the project's step, see bench_training) on the
batch of the two most crowded CoNSeP training images (train_18: 2,283 nuclei, train_23:
1,242), under ``cProfile``, at each size. The parts are the cumulative times of the named
functions (nested parts are indented; a part's time includes its children). The first step
of the run is an untimed warm-up at the first size; the model then continues at the next.

Before/after, each on the same inputs in this run (the "before" once, the "after" as the
median of 3 calls; results compared):

- anchor labelling: Detectron2's ``RPN.label_and_sample_anchors`` (a dense
  ``pairwise_iou`` of every ground-truth box against every anchor, then ``Matcher``) against
  ``CellsRPN.label_and_sample_anchors`` (the IoU of overlapping pairs only), on the crowded
  batch's boxes; the labels (after the same random subsampling) and matched boxes must be
  identical.
- training data mapping: Detectron2's ``DatasetMapper`` with bitmasks (every instance decoded
  at full size, then resized one by one) against ``CellsDatasetMapper`` (``CroppedMasks``),
  for the crowded batch; boxes and classes must be identical, and the 28 x 28 mask-loss
  targets of both (``crop_and_resize`` at the ground-truth boxes) are compared.
- inference postprocess at 1,000 detections: Detectron2's ``detector_postprocess`` (every
  mask pasted into a full-size bitmap) plus ``pycocotools.mask.encode`` of each full-size
  mask (what ``instances_to_coco_json`` does) against ``postprocess_to_rle`` (masks pasted
  inside their boxes only, encoded from the crops), on the same raw detections of one test
  image; the RLEs are compared.

Reading the profile (CPU, as measured while writing these benchmarks): about two thirds of
a step is the backward pass, mostly oneDNN's convolution backward, and within the backward
torchvision's ``roi_align`` backward (a serial loop over the regions on a CPU: about 10 % of
the step); the largest forward part is the mask head (4 convolutions and a deconvolution on
up to 128 positive regions per image), then the backbone. The anchor labelling that a dense
IoU made cost 5 s per iteration on this batch at 512 px (and several GB) is now about 2 % of
the step; the ROI heads' proposal matching (a dense IoU of G ground-truth boxes against
2,000 + G proposals, left as Detectron2 does it) is about as much. The data path is off the
critical path (see the data-loading table). What remains is arithmetic in the convolutions:
bfloat16 autocast (the training table's CPU AMP row) is the lever on CPUs with AVX-512 BF16.
Changes that would have to be made inside the libraries, not done here: a multi-threaded
CPU ``roi_align`` backward (torchvision); in Detectron2, ``DatasetMapper`` truncating the
integer boxes of a record to integers when it resizes them (``apply_box`` on an int array;
the project's mapper casts to float first, so it is not affected).

Run: ``python benchmarks/bench_profile.py [--quick] [--device cpu] [--sizes 512 800]``.
"""

import argparse
import copy
import cProfile
import itertools
import pstats
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from bench_training import build_ours_runner, ours_batches
from common import (
    PeakMemory,
    Stopwatch,
    add_common_args,
    describe_images,
    format_bytes,
    load_consep,
    markdown_table,
    ours_config,
    resolve_device,
    seed_everything,
)

from seg_project.data.image_io import read_image

TITLE = "Profile of our training step, and each optimisation's before/after"
# (label, depth, file path suffix, function name): cumulative time of these functions.
PARTS = [
    ("forward: preprocess (normalize, pad)", 0, "meta_arch/rcnn.py", "preprocess_image"),
    ("forward: backbone (ResNet-50 + FPN)", 0, "backbone/fpn.py", "forward"),
    ("forward: RPN", 0, "proposal_generator/rpn.py", "forward"),
    ("anchor labelling (label_and_sample_anchors)", 1, "rpn.py", "label_and_sample_anchors"),
    ("RPN losses", 1, "proposal_generator/rpn.py", "losses"),
    ("proposals (decode, top-k, NMS)", 1, "proposal_generator/rpn.py", "predict_proposals"),
    ("forward: ROI heads", 0, "roi_heads/roi_heads.py", "forward"),
    ("proposal matching and sampling", 1, "roi_heads/roi_heads.py",
     "label_and_sample_proposals"),
    ("box head and its losses", 1, "roi_heads/roi_heads.py", "_forward_box"),
    ("mask head and its loss", 1, "roi_heads/roi_heads.py", "_forward_mask"),
    ("mask targets (CroppedMasks.crop_and_resize)", 2, "data/cropped_masks.py",
     "crop_and_resize"),
    ("backward (autograd)", 0, "torch/autograd/__init__.py", "backward"),
    ("torchvision roi_align through torch.library: forward, and backward (inside the "
     "backward above)", 0, "torch/_ops.py", "redispatch"),
    ("optimizer step (SGD)", 0, "torch/optim/sgd.py", "step"),
]
TOP_FUNCTIONS = 12
CROWDED_IMAGES = 2


def crowded_records(records: Sequence[Dict], count: int = CROWDED_IMAGES) -> List[Dict]:
    """The ``count`` records with the most instances (most first)."""
    return sorted(records, key=lambda r: -len(r["annotations"]))[:count]


def _cumulative(stats: pstats.Stats, path_suffix: str, function: str) -> float:
    """Cumulative seconds of the functions named ``function`` in files ending with
    ``path_suffix`` (outermost calls only: cProfile's cumulative time of a function)."""
    return sum(ct for (filename, _, name), (_, _, _, ct, _) in stats.stats.items()
               if name == function and filename.replace("\\", "/").endswith(path_suffix))


def _short(filename: str, line: int, function: str) -> str:
    path = filename.replace("\\", "/")
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if path == "~":
        return function  # a built-in
    return f"{path}:{line} {function}"


def _top_functions(stats: pstats.Stats, count: int) -> List[Dict]:
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:count]
    return [{"function (own time)": _short(*key), "calls": nc, "own s": tt, "cumulative s": ct}
            for key, (_, nc, tt, ct, _) in rows]


def profile_step(runner) -> Tuple[float, pstats.Stats]:
    """One profiled training step: (wall seconds, cProfile stats)."""
    profiler = cProfile.Profile()
    with Stopwatch() as watch:
        profiler.enable()
        runner.step()
        profiler.disable()
    return watch.wall, pstats.Stats(profiler)


def _profile_rows(size: int, seconds: float, stats: pstats.Stats) -> List[Dict]:
    rows = [{"size": f"{size}x{size}", "part": "whole step (wall clock)", "s": seconds,
             "share of step": 1.0}]
    for label, depth, path_suffix, function in PARTS:
        part = _cumulative(stats, path_suffix, function)
        rows.append({"size": f"{size}x{size}", "part": "- " * depth + label, "s": part,
                     "share of step": part / seconds})
    return rows


# ----------------------------------------------------------------------------- before/after


def _after_median(fn, device: Optional[torch.device] = None,
                  repeats: int = 3) -> Tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        with Stopwatch(device) as watch:
            result = fn()
        times.append(watch.wall)
    return statistics.median(times), result


def _feature_sizes(size: int, strides: Sequence[int], divisibility: int) -> List[Tuple]:
    padded = -(-size // divisibility) * divisibility
    return [(-(-padded // s), -(-padded // s)) for s in strides]


def anchor_labelling(size: int, device: torch.device, batch: List[Dict], model) -> Dict:
    """Before/after of the RPN's anchor labelling on one batch's ground truth."""
    from detectron2.modeling.proposal_generator import build_proposal_generator

    cfg = ours_config(size, device, proposal_generator="RPN")
    shapes = model.backbone.output_shape()
    stock = build_proposal_generator(cfg, shapes).to(device)
    ours = model.proposal_generator
    features = [torch.zeros(1, 1, h, w, device=device) for h, w in _feature_sizes(
        size, [shapes[f].stride for f in ours.in_features], model.backbone.size_divisibility)]
    anchors = ours.anchor_generator(features)
    targets = [d["instances"].to(device) for d in batch]

    def run(rpn):
        torch.manual_seed(0)
        return rpn.label_and_sample_anchors(anchors, targets)

    with PeakMemory(device) as before_memory, Stopwatch(device) as before:
        expected = run(stock)
    with PeakMemory(device) as after_memory:
        after, result = _after_median(lambda: run(ours), device)
    same = all(torch.equal(a, b) for a, b in zip(result[0] + result[1],
                                                 expected[0] + expected[1]))
    num_gt = "+".join(str(len(t)) for t in targets)
    return {"optimisation": "anchor labelling (RPN)", "size": f"{size}x{size}",
            "input": f"{num_gt} gt boxes x {sum(len(a) for a in anchors):,} anchors",
            "before": "Detectron2 RPN (dense pairwise_iou + Matcher)", "before s": before.wall,
            "after": "CellsRPN (overlapping pairs only)", "after s": after,
            "speedup": before.wall / after,
            "peak memory before / after": f"{format_bytes(before_memory.peak_bytes)} / "
                                          f"{format_bytes(after_memory.peak_bytes)}",
            "same result": "identical" if same else "DIFFERENT"}


def data_mapping(size: int, device: torch.device, records: List[Dict]) -> Dict:
    """Before/after of the training mapper on the crowded batch."""
    from detectron2.data import DatasetMapper

    from seg_project.data.mapper import CellsDatasetMapper

    cfg = ours_config(size, device)
    stock, ours = DatasetMapper(cfg, is_train=True), CellsDatasetMapper(cfg, is_train=True)
    with Stopwatch() as before:
        expected = [stock(copy.deepcopy(r)) for r in records]
    after, result = _after_median(lambda: [ours(copy.deepcopy(r)) for r in records])
    same_classes, box_error, differing, total, dropped = True, 0.0, 0, 0, 0
    for got, want in zip(result, expected):
        got, want = got["instances"], want["instances"]
        # Detectron2 also drops instances whose bitmask the resize emptied (specks of a few
        # pixels); compare the instances both kept (same order: the annotations').
        dropped += len(got) - len(want)
        got = got[_common_instances(got.gt_boxes.tensor, want.gt_boxes.tensor)]
        if len(got) != len(want):
            same_classes = False
            continue
        same_classes &= torch.equal(got.gt_classes, want.gt_classes)
        box_error = max(box_error, float((got.gt_boxes.tensor - want.gt_boxes.tensor).abs()
                                         .max()))
        boxes = want.gt_boxes.tensor
        a, b = got.gt_masks.crop_and_resize(boxes, 28), want.gt_masks.crop_and_resize(boxes, 28)
        differing += int((a != b).sum())
        total += a.numel()
    verdict = (
        ("same instances and classes" if same_classes else "instances DIFFER")
        + f" (Detectron2 dropped {dropped} whose resized bitmask was empty)"
        + f"; 28x28 mask-loss targets at the same boxes differ on {differing / max(total, 1):.3%}"
        f" of pixels; boxes differ by up to {box_error:.2f} px (Detectron2's ``apply_box`` "
        "truncates the integer boxes of the records to integers; ours keeps the exact scaled "
        "box)"
    )
    return {"optimisation": "training data mapping", "size": f"{size}x{size}",
            "input": f"{len(records)} images, "
                     f"{sum(len(r['annotations']) for r in records):,} instances",
            "before": "Detectron2 DatasetMapper (full-size bitmasks)", "before s": before.wall,
            "after": "CellsDatasetMapper (CroppedMasks)", "after s": after,
            "speedup": before.wall / after, "same result": verdict}


def _common_instances(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """Indices of ``ours`` boxes that, in order, lie within a pixel of ``theirs`` (which is a
    subsequence of them: Detectron2 drops instances whose bitmask became empty)."""
    keep, j = [], 0
    for i, box in enumerate(ours):
        if j < len(theirs) and bool(((box - theirs[j]).abs() < 1).all()):
            keep.append(i)
            j += 1
    return torch.tensor(keep, dtype=torch.long)


def _full_masks_to_rles(instances) -> List[Dict]:
    import pycocotools.mask as mask_util

    masks = instances.pred_masks.numpy()
    return [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def inference_postprocess(size: int, device: torch.device, image: np.ndarray, name: str,
                          max_dets: int = 1000) -> Dict:
    """Before/after of the inference postprocess at ``max_dets`` detections."""
    from detectron2.modeling.postprocessing import detector_postprocess

    from seg_project.inference.postprocess import postprocess_to_rle
    from seg_project.inference.predictor import Predictor

    seed_everything(0)
    cfg = ours_config(size, device, max_dets=max_dets)
    predictor = Predictor(cfg, weights="")  # random init: nothing to load
    model = predictor.model.model
    inputs = [predictor._inputs(image)]
    height, width = image.shape[:2]
    with torch.no_grad(), Stopwatch(device) as model_time:
        raw = model.inference(inputs, do_postprocess=False)[0].to("cpu")
    stock_input = copy.deepcopy(raw)  # detector_postprocess scales the boxes in place
    with Stopwatch() as before:
        full = detector_postprocess(stock_input, height, width)
        expected = _full_masks_to_rles(full)
    after, result = _after_median(lambda: postprocess_to_rle(raw, height, width))
    identical = sum(a["counts"] == (b["counts"].decode() if isinstance(b["counts"], bytes)
                                    else b["counts"])
                    for a, b in zip(result.pred_rles, expected))
    return {"optimisation": f"inference postprocess ({max_dets:,} detections)",
            "size": f"{size}x{size}",
            "input": f"{name} ({height}x{width}), {len(raw)} raw detections; the model "
                     f"itself took {model_time.wall:.1f} s",
            "before": "detector_postprocess (full-size paste) + pycocotools encode",
            "before s": before.wall,
            "after": "postprocess_to_rle (paste in boxes, crop encoder)", "after s": after,
            "speedup": before.wall / after,
            "same result": f"{identical} of {len(expected)} RLEs identical"}


# ----------------------------------------------------------------------------- run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="input sizes S profiled (default 512 800; --quick: 512)")
    parser.add_argument("--no-profile", action="store_true",
                        help="only the before/after measurements")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([512] if args.quick else [512, 800])
    return args


def run(argv=None, notes: Optional[List[str]] = None) -> Dict[str, List[Dict]]:
    """Profile the step and measure the before/after; returns ``{table title: rows}``.

    Raises:
        AssertionError: an optimisation changed a result that must stay identical.
    """
    args = parse_args(argv)
    device = resolve_device(args.device)
    train = load_consep(args.data, "train")
    records = crowded_records(train)
    test = load_consep(args.data, "test")
    test_record = crowded_records(test, 1)[0]
    lines = [f"Training batch: the {len(records)} most crowded of {len(train)} CoNSeP train "
             f"images: {describe_images(records)}."]
    profile_rows, top_rows, changes = [], {}, []
    runner = None
    for index, size in enumerate(args.sizes):
        seed_everything(args.seed)
        cfg = ours_config(size, device)
        batches = ours_batches(cfg, records)
        if runner is None:
            runner = build_ours_runner(size, device, records, batches=batches)
            with Stopwatch(device) as warmup:
                runner.step()
            lines.append(f"Warm-up step at {size}x{size} (untimed in the profile): "
                         f"{warmup.wall:.1f} s.")
        else:
            # The same model continues on the batch at this size.
            runner.trainer._data_loader_iter = itertools.cycle(batches)
        print(f"profiling the step at {size}x{size}", file=sys.stderr, flush=True)
        if not args.no_profile:
            seconds, stats = profile_step(runner)
            profile_rows += _profile_rows(size, seconds, stats)
            top_rows[size] = _top_functions(stats, TOP_FUNCTIONS)
        print(f"anchor labelling before/after at {size}x{size}", file=sys.stderr, flush=True)
        changes.append(anchor_labelling(size, device, batches[0], runner.trainer.model))
        if index == 0:
            print("data mapping and postprocess before/after", file=sys.stderr, flush=True)
            changes.append(data_mapping(size, device, records))
            image = read_image(test_record["file_name"])
            changes.append(inference_postprocess(size, device, image,
                                                 Path(test_record["file_name"]).parent.name))
    for size, rows in top_rows.items():
        lines.append(f"Top {TOP_FUNCTIONS} functions by own time in the profiled step at "
                     f"{size}x{size} (built-ins are C++ calls, e.g. the convolutions of the "
                     f"forward pass; the backward pass runs inside `run_backward`):\n\n"
                     + markdown_table(rows))
    print("\n\n".join(lines), file=sys.stderr)
    if notes is not None:
        notes.extend(lines)
    different = [c for c in changes if "DIFFER" in c["same result"]]
    if different:
        raise AssertionError(f"an optimisation changed its result: {different}")
    tables = {"Before/after of each optimisation (same inputs, same run)": changes}
    if profile_rows:
        tables = {"Profile of one training step of ours (cProfile, cumulative s)":
                  profile_rows, **tables}
    return tables


def main(argv=None) -> Dict[str, List[Dict]]:
    """Run and print the tables."""
    from common import print_table

    notes: List[str] = []
    tables = run(argv, notes)
    for title, rows in tables.items():
        print_table(title, rows)
    for note in notes:
        print(f"\n{note}")
    return tables


if __name__ == "__main__":
    main()
