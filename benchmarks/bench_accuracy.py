"""Accuracy on real cells: what each lever of the native-scale recipe gives on CoNSeP.

Every variant trains from random weights with ``tools/train_net.py`` on CoNSeP ``train/`` (all
27 images: ``cells_trainval``) for the same CPU budget (``--minutes``), is evaluated on
``test/`` (14 images: ``cells_annotated_test``) a few times during training (the curves), and
its final predictions are scored with the project's evaluation: the grader-exact COCO AP (at
most 100 detections per image and class, as the course's grader), the high-cap AP (3,000), and
the pathology metrics at score >= 0.5 (PQ, SQ, DQ, mPQ, AJI, Dice, F1), and the cells four
ways (``benchmarks/bench_cells.py``: at 0.5 and at a cross-validated chosen threshold, without
and with the overlap rule; added to finished runs that lack it when they are reused).

Variants (``--variants``; each adds one lever to the baseline, then all together):

- ``baseline``: the quick config at 512 px (what a new user gets today).
- ``native_crops``: native pixel scale (``INPUT.RESIZE_MODE "scale"``), 256 px crops, batch 4
  and anchors from 8 px (at native scale, 256 px crops cost what 512 px images do).
- ``rot90``: the 8 orientations of a square.
- ``stain``: H&E stain jitter.
- ``combined``: ``configs/mask_rcnn_R_18_FPN_cells_native_scale.yaml`` (all of them, with more
  proposals and positive RoIs in training).
- inference only, on the trained weights of ``baseline`` / ``combined``: ``caps`` (3,000
  proposals and 2,500 detections per image instead of 1,000), ``baseline_tiles`` /
  ``combined_tiles`` (the same model predicting in tiles of half the image, ``TEST.TILE``, at
  the whole image's proposal density: what the tile merge costs or gives).

The budget is turned into iterations per variant from a 10-iteration calibration run on this
machine (a variant with a costlier step gets fewer iterations). Train minutes exclude the
evaluations. ``--recipe-run DIR`` adds a finished run of the native-scale config, trained as the
config says (``tools/train_net.py --config-file configs/mask_rcnn_R_18_FPN_cells_native_scale.yaml
...``), as its own table. Results accumulate in ``benchmarks/accuracy_results.json`` (one entry
per budget and variant) and ``benchmarks/ACCURACY.md`` is written from all of them, with the
curves and pictures of one test image (ground truth left, predictions right).

Run: ``python benchmarks/bench_accuracy.py [--minutes 60] [--variants ...] [--quick]``.
``--quick`` is a smoke run (3 iterations per variant on 4 training images, one evaluation on 2
test images with at most 100 detections, nothing written to ``benchmarks/``). Finished variants
in ``--work-dir`` are reused unless ``--fresh``; an interrupted one (it checkpoints four times
between evaluations) is continued from its last checkpoint.
"""

import argparse
import ast
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from common import DEFAULT_DATA, REPO_ROOT, machine_info, markdown_table

from seg_project.utils.run_files import (
    CONFIG_FILE,
    FINAL_MODEL,
    LOG_FILE,
    METRICS_FILE,
    results_file,
)

QUICK_CONFIG = "configs/quick_schedules/mask_rcnn_R_18_FPN_cells_quick.yaml"
NATIVE_CONFIG = "configs/mask_rcnn_R_18_FPN_cells_native_scale.yaml"
TEST_SET = "cells_annotated_test"
HIGH_CAP = 3000
CALIBRATION_ITERS = 40
# A finished variant's row, saved in its run folder for the next invocation to reuse.
BENCH_RUN_FILE = "bench_run.json"
CLASS_NAMES = ["other", "inflammatory", "epithelial", "spindle"]  # CoNSeP's classes 1-4

BASELINE = {"INPUT.MIN_SIZE_TRAIN": "(512,)", "INPUT.MAX_SIZE_TRAIN": 512,
            "INPUT.MIN_SIZE_TEST": 512, "INPUT.MAX_SIZE_TEST": 512}
NATIVE_CROPS = {"INPUT.RESIZE_MODE": "scale", "INPUT.CROP.ENABLED": True,
                "INPUT.CROP.TYPE": "absolute", "INPUT.CROP.SIZE": "[256,256]",
                "INPUT.MIN_INSTANCE_AREA": 8, "SOLVER.IMS_PER_BATCH": 4, "SOLVER.BASE_LR": 0.02,
                "MODEL.ANCHOR_GENERATOR.SIZES": "[[8],[16],[32],[64],[128]]"}
CAPS = {"TEST.DETECTIONS_PER_IMAGE": 2500, "MODEL.RPN.PRE_NMS_TOPK_TEST": 3000,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 3000}

# The native-scale recipe as it stood before the full-budget levers (issue 21), pinned key by
# key so that its row stays reproducible whatever the config file says today.
RECIPE = {"SOLVER.AMP.ENABLED": False, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,
          "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 256,
          "INPUT.ROT90.ENABLED": True, "INPUT.STAIN_JITTER.ENABLED": True,
          "INPUT.COPY_PASTE.ENABLED": False}
BF16 = {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.CPU_DTYPE": "auto"}
# RoI budgets sized to a crop's nuclei (benchmarks/bench_recipe_step.py: the mask head and
# torchvision's serial roi_align backward scale with the sampled RoIs).
LEAN_ROIS = {"MODEL.RPN.POST_NMS_TOPK_TRAIN": 500, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128}
COPY_PASTE = {"INPUT.COPY_PASTE.ENABLED": True}

# name -> (description, config file, overrides)
TRAINED = {
    "baseline": ("quick config, 512 px (today)", QUICK_CONFIG, BASELINE),
    "native_crops": ("+ native scale, 256 px crops, 8 px anchors", QUICK_CONFIG, NATIVE_CROPS),
    "rot90": ("+ 8 orientations", QUICK_CONFIG, {**BASELINE, "INPUT.ROT90.ENABLED": True}),
    "stain": ("+ H&E stain jitter", QUICK_CONFIG, {**BASELINE, "INPUT.STAIN_JITTER.ENABLED": True}),
    "combined": ("all levers: native-scale config", NATIVE_CONFIG, {}),
    # Levers of the native-scale recipe at a full budget (issue 21).
    "recipe": ("native-scale recipe as it stood (float32)", NATIVE_CONFIG, RECIPE),
    "bf16": ("recipe + bfloat16 autocast (CPU AMP auto)", NATIVE_CONFIG, {**RECIPE, **BF16}),
    "copy_paste": ("recipe + copy-paste", NATIVE_CONFIG, {**RECIPE, **COPY_PASTE}),
    "lean_rois": ("recipe + 500 proposals, 128 RoIs per crop", NATIVE_CONFIG,
                  {**RECIPE, **LEAN_ROIS}),
    "bf16_lean": ("recipe + bf16 + lean RoIs (the two speed levers)", NATIVE_CONFIG,
                  {**RECIPE, **BF16, **LEAN_ROIS}),
    "bf16_cp": ("recipe + bf16 + copy-paste", NATIVE_CONFIG, {**RECIPE, **BF16, **COPY_PASTE}),
    "bf16_lean_cp": ("recipe + bf16 + lean RoIs + copy-paste", NATIVE_CONFIG,
                     {**RECIPE, **BF16, **LEAN_ROIS, **COPY_PASTE}),
    "no_rot90": ("recipe without the 8 orientations", NATIVE_CONFIG,
                 {**RECIPE, "INPUT.ROT90.ENABLED": False}),
    "no_stain": ("recipe without stain jitter", NATIVE_CONFIG,
                 {**RECIPE, "INPUT.STAIN_JITTER.ENABLED": False}),
}
# The best measured combination (what configs/mask_rcnn_R_18_FPN_cells_native_scale.yaml is).
BEST = "bf16"
# Trained variants whose predictions on one test image are drawn for ACCURACY.md.
PICTURED = ("baseline", "combined", "recipe", BEST)
# Variants trained for a number of iterations of another variant rather than for the budget:
# name -> the variant whose calibrated iterations it takes (the equal-iteration comparison).
# (rotations and stain jitter cost milliseconds of a seconds-long step: the recipe's budget.)
EQUAL_ITERATIONS = {"bf16_iters": "recipe", "lean_rois_iters": "recipe", "no_rot90": "recipe",
                    "no_stain": "recipe"}
# Variants whose step is another's (the same training for fewer iterations, or one without an
# augmentation that costs milliseconds of a seconds-long step): they report its calibration
# rather than measuring their own, which the queue would measure on a shared machine.
SAME_STEP = {"bf16_iters": "bf16", "lean_rois_iters": "lean_rois", "no_rot90": "recipe",
             "no_stain": "recipe"}
TRAINED["bf16_iters"] = ("bf16 at the recipe's iterations (equal-iteration check)", NATIVE_CONFIG,
                         {**RECIPE, **BF16})
TRAINED["lean_rois_iters"] = ("lean_rois at the recipe's iterations (equal-iteration check)",
                              NATIVE_CONFIG, {**RECIPE, **LEAN_ROIS})


def tile_overrides(size: int, overlap: int, proposals_per_image: int, image_side: int) -> Dict:
    """Tiling overrides at the whole image's proposal density: the RPN's test budgets are per
    forward pass, so a tile gets the share of ``proposals_per_image`` its area is of the image's
    (``image_side`` squared, in model pixels)."""
    proposals = math.ceil(proposals_per_image * size * size / (image_side * image_side))
    return {"TEST.TILE.SIZE": size, "TEST.TILE.OVERLAP": overlap,
            "MODEL.RPN.PRE_NMS_TOPK_TEST": proposals, "MODEL.RPN.POST_NMS_TOPK_TEST": proposals}


# name -> (description, trained variant whose weights it uses, overrides at inference)
INFERENCE_ONLY = {
    "caps": ("baseline, 3,000 proposals / 2,500 detections", "baseline", CAPS),
    "baseline_tiles": ("baseline, predicted in 256 px tiles", "baseline",
                       {"INPUT.RESIZE_MODE": "scale", "INPUT.SCALE_TEST": 0.512,
                        **tile_overrides(256, 48, proposals_per_image=1000, image_side=512)}),
    "combined_tiles": ("combined, predicted in 512 px tiles", "combined",
                       tile_overrides(512, 96, proposals_per_image=3000, image_side=1000)),
}
ALL_VARIANTS = list(TRAINED) + list(INFERENCE_ONLY)
# With --recipe-run: the recipe's own weights predicting in tiles.
RECIPE_TILES = ("native-scale recipe, predicted in 512 px tiles",
                tile_overrides(512, 96, proposals_per_image=3000, image_side=1000))

# Published CoNSeP figures (HoVer-Net, Graham et al., Medical Image Analysis 2019, Table 3).
PUBLISHED = [
    {"method": "HoVer-Net (Graham et al. 2019)", "Dice": 0.853, "AJI": 0.571, "DQ": 0.702,
     "SQ": 0.778, "PQ": 0.547,
     "what it had": "an ImageNet-pretrained encoder, training on a GPU, and a pixel-wise "
                    "architecture (horizontal/vertical distance maps, no boxes)"},
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="CPU training budget per variant, in minutes (default 60)")
    parser.add_argument("--variants", nargs="+", default=ALL_VARIANTS, choices=ALL_VARIANTS,
                        metavar="NAME", help=f"which variants (default all: {ALL_VARIANTS})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"CoNSeP root with train/ and test/ (default {DEFAULT_DATA})")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench_accuracy"),
                        help="training runs go here (default /tmp/bench_accuracy)")
    parser.add_argument("--evaluations", type=int, default=3,
                        help="evaluations per training run, the last at the end (default 3)")
    parser.add_argument("--recipe-run", type=Path, default=None,
                        help="a finished training run of the native-scale config to report too")
    parser.add_argument("--note", action="append", default=[],
                        help="a paragraph for the report's notes (repeatable), e.g. how a "
                             "--recipe-run was trained")
    parser.add_argument("--picture", default=None,
                        help="test image (folder name) of the pictures (default: the first)")
    parser.add_argument("--fresh", action="store_true",
                        help="recalibrate and retrain finished variants")
    parser.add_argument("--calibrate-only", action="store_true",
                        help="only measure each trained variant's step time (on an idle machine)")
    parser.add_argument("--no-report", action="store_true",
                        help="train and score the variants (kept in --work-dir for a later run "
                             "to reuse) without writing benchmarks/: for runs side by side")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 iterations per variant, 2 test images, writes nothing "
                             "in benchmarks/")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- running


def _opts(overrides: Dict) -> List[str]:
    flat = []
    for key, value in overrides.items():
        flat += [key, str(value)]
    return flat


def _train_net(config: str, overrides: Dict, log_path: Path, extra: Sequence[str] = (),
               append: bool = False) -> None:
    """Run tools/train_net.py, its log in ``log_path`` (added to with ``append``); progress
    lines (ETA) echoed."""
    command = [sys.executable, str(REPO_ROOT / "tools" / "train_net.py"), "--config-file",
               str(REPO_ROOT / config), *extra, *_opts(overrides)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a" if append else "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if "eta:" in line or "Total inference time" in line:
                print("   ", line.strip()[:160], flush=True)
        if process.wait() != 0:
            raise RuntimeError(f"tools/train_net.py failed (exit {process.returncode}); "
                               f"see {log_path}")


def _smoke_data(data: Path, target: Path) -> Path:
    """A course-layout folder of links to 4 training and 2 test images of ``data``."""
    for split, count in (("train", 4), ("test", 2)):
        folders = sorted(p for p in (data / split).iterdir() if (p / "image.tif").exists())
        (target / split).mkdir(parents=True, exist_ok=True)
        for folder in folders[:count]:
            link = target / split / folder.name
            if not link.exists():
                link.symlink_to(folder.resolve(), target_is_directory=True)
    return target


def _data_overrides(args) -> Dict:
    opts = {"DATASETS.CELLS.ROOT": str(args.data), "DATASETS.TRAIN": "('cells_trainval',)",
            "DATASETS.CELLS.CLASS_NAMES": str(CLASS_NAMES),
            "DATASETS.TEST": f"('{TEST_SET}',)", "DATALOADER.NUM_WORKERS": 0,
            # The curves' PQ as before the overlap rule existed (score >= 0.5, nothing dropped),
            # so that every run's curve means the same; the cells tables add the rule.
            "TEST.PATHOLOGY.SCORE_THRESHOLD": 0.5, "TEST.INSTANCE_MAP.MIN_VISIBLE_FRACTION": 0.0,
            "TEST.INSTANCE_MAP.MAX_MASK_IOU": 1.0}
    if args.quick:  # an untrained model's hundreds of junk detections would dominate the time
        opts["TEST.DETECTIONS_PER_IMAGE"] = 100
    return opts


def _seconds_per_iter(log_text: str) -> float:
    match = re.findall(r"Overall training speed: \d+ iterations in \S+ \(([\d.]+) s / it\)",
                       log_text)
    if not match:
        raise RuntimeError("no 'Overall training speed' line in the training log")
    return float(match[-1])


def _train_minutes(log_text: str) -> float:
    """Training time without the hooks (evaluations, checkpoints), in minutes, from the log's
    progress lines: each training segment (a run continued after an interruption has several)
    contributes the iterations it kept (up to where the next segment restarted) times its mean
    seconds per iteration (the ``time:`` Detectron2 prints, an average over the segment). An
    interrupted segment never prints a total, so the totals alone would miss it."""
    starts = [(m.start(), int(m[1])) for m in
              re.finditer(r"Starting training from iteration (\d+)", log_text)]
    if not starts:
        raise RuntimeError("no 'Starting training from iteration' line in the training log")
    seconds = 0.0
    for k, (offset, first) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(log_text)
        progress = re.findall(r"iter: (\d+) .*? time: ([\d.]+) ", log_text[offset:stop])
        if not progress:
            continue
        last, mean = int(progress[-1][0]), float(progress[-1][1])
        kept = (starts[k + 1][1] if k + 1 < len(starts) else last + 1) - first
        seconds += max(0, kept) * mean
    return seconds / 60


def _inference_seconds(log_text: str) -> Optional[float]:
    match = re.findall(r"Total inference time: \S+ \(([\d.]+) s / iter per device", log_text)
    return float(match[-1]) if match else None


def _iters_per_epoch(config: str, overrides: Dict, num_images: int) -> int:
    from seg_project.config import load_config

    cfg = load_config(REPO_ROOT / config)
    batch = int(overrides.get("SOLVER.IMS_PER_BATCH", cfg.SOLVER.IMS_PER_BATCH))
    return math.ceil(num_images / batch)


def _curves(run_dir: Path) -> List[Dict]:
    """The run's evaluations: iteration (1-based), segm AP50 and PQ of each."""
    from seg_project.analysis.curves import read_metrics

    path = run_dir / METRICS_FILE
    series = read_metrics(path) if path.exists() else {}
    if "segm/AP50" not in series:
        return []
    pq = {}
    if "pathology/PQ" in series:
        pq = dict(zip(*(a.tolist() for a in series["pathology/PQ"])))
    return [{"iteration": it + 1, "segm/AP50": ap50, "pathology/PQ": pq.get(it)}
            for it, ap50 in zip(*(a.tolist() for a in series["segm/AP50"]))]


def _score(predictions: Path, args) -> Dict[str, float]:
    from seg_project.evaluation.results_file import evaluate_results_file

    return _row(evaluate_results_file(predictions, args.data / "test", CLASS_NAMES,
                                      high_cap=HIGH_CAP))


def _cells(predictions: Path, args, row: Dict) -> List[Dict]:
    """The run's cells four ways (benchmarks/bench_cells.py): score >= 0.5 without and with
    the overlap rule (TEST.INSTANCE_MAP's default), and at a threshold chosen on the grid,
    2-fold cross-validated over the test images (the split the figures are reported on),
    without and with the rule; the row's AP50 beside them."""
    from bench_cells import four_rows, measure

    from seg_project.data.instance_map import DEFAULT_RULE, NO_RULE
    from seg_project.evaluation.results_file import ground_truth, load_results_xywh

    coco_gt, class_names = ground_truth(args.data / "test", CLASS_NAMES)
    entries, _ = load_results_xywh(predictions)
    measured = measure(coco_gt, entries, class_names, [NO_RULE, DEFAULT_RULE])
    ap = {key: row.get(key) for key in ("AP50 (grader)", f"AP50 @{HIGH_CAP}")}
    return four_rows(measured, DEFAULT_RULE, ap)


def _with_cells(row: Dict, args, save: Optional[Path] = None) -> Dict:
    """A finished row with its cells table (computed once for rows saved before it existed;
    saved into ``save`` when given)."""
    if "cells" not in row:
        row["cells"] = _cells(_results_file(Path(row["run_dir"])), args, row)
        if save is not None:
            save.write_text(json.dumps(row, indent=1))
    return row


def _row(metrics: Dict) -> Dict[str, float]:
    segm, path = metrics["segm"], metrics.get("pathology", {})
    row = {"AP50 (grader)": segm["AP50"], "AP (grader)": segm["AP"],
           f"AP50 @{HIGH_CAP}": segm[f"AP50@{HIGH_CAP}"], f"AP @{HIGH_CAP}": segm[f"AP@{HIGH_CAP}"]}
    for key in ("PQ", "SQ", "DQ", "mPQ", "AJI", "Dice", "F1"):
        row[key] = path.get(key)
    return row


def ceiling_row(args) -> Dict:
    """The ground truth scored as if it were predictions: the best any model can reach."""
    from seg_project.evaluation.predictions import evaluate_predictions
    from seg_project.evaluation.results_file import ground_truth

    coco_gt, class_names = ground_truth(args.data / "test", CLASS_NAMES)
    entries = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                "bbox": a["bbox"], "segmentation": a["segmentation"]}
               for a in coco_gt.dataset["annotations"]]
    metrics = evaluate_predictions(coco_gt, entries, class_names, high_cap=HIGH_CAP)
    return {"variant": "ceiling", "what": "the ground truth itself, as predictions",
            **_row(metrics)}


def _results_file(run_dir: Path) -> Path:
    return results_file(run_dir, TEST_SET)


def _finished_row(run_dir: Path) -> Optional[Dict]:
    """The row a finished variant saved in its run folder, or None."""
    done = run_dir / BENCH_RUN_FILE
    return json.loads(done.read_text()) if done.exists() else None


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether an unfinished run left a checkpoint to continue from."""
    return any(run_dir.glob("model_[0-9]*.pth")) or (run_dir / f"{FINAL_MODEL}.pth").exists()


def calibrate(name: str, args) -> float:
    """Seconds per iteration of a variant, from a short training run on this machine.

    The run's log is kept in ``<work-dir>/calibration/<variant>`` (outside the budget's folder)
    and reused: calibrate every variant once on an idle machine (``--calibrate-only``), then
    train variants side by side; each still gets the iterations its idle step time buys.
    """
    _, config, overrides = TRAINED[name]
    calib_dir = args.work_dir / "calibration" / name
    log_path = calib_dir / "train.log"
    if args.fresh or not log_path.exists() or "Overall training speed" not in log_path.read_text():
        print(f"== {name}: calibrating ({CALIBRATION_ITERS} iterations)", flush=True)
        _train_net(config, {**overrides, **_data_overrides(args), "DATASETS.TEST": "()",
                            "SOLVER.EPOCHS": 0, "SOLVER.MAX_ITER": CALIBRATION_ITERS,
                            "OUTPUT_DIR": str(calib_dir)}, log_path)
    return _seconds_per_iter(log_path.read_text())


def step_seconds(name: str, args) -> float:
    """The calibrated seconds per iteration of a variant (of the one whose step it shares)."""
    return calibrate(SAME_STEP.get(name, name), args)


def run_trained(name: str, args, num_images: int) -> Dict:
    """Train and evaluate one variant for the budget (or reuse its finished run)."""
    description, config, overrides = TRAINED[name]
    run_dir = args.budget_dir / name
    data = _data_overrides(args)
    finished = None if args.fresh else _finished_row(run_dir)
    if finished:
        print(f"== {name}: reusing {run_dir}", flush=True)
        if not args.quick and finished.get("calibrated s/it") is not None:
            finished["calibrated s/it"] = step_seconds(name, args)
        return _with_cells(finished, args, run_dir / BENCH_RUN_FILE)
    print(f"== {name}: {description}", flush=True)
    if args.quick:
        iterations, sec_per_iter = 3, None
    else:
        sec_per_iter = step_seconds(name, args)
        paced_by = calibrate(EQUAL_ITERATIONS[name], args) if name in EQUAL_ITERATIONS \
            else sec_per_iter
        iterations = max(1, int(args.minutes * 60 / paced_by))
    per_epoch = _iters_per_epoch(config, overrides, num_images)
    epochs = max(1, round(iterations / per_epoch))
    every = epochs if args.quick else max(1, math.ceil(epochs / args.evaluations))
    print(f"   {iterations} iterations ({sec_per_iter} s/it calibrated) -> {epochs} epochs of "
          f"{per_epoch}, evaluated every {every}", flush=True)
    # Four checkpoints between evaluations (the newest 3 kept): an interrupted run (a machine
    # that goes away) is continued from its last one by the next invocation, with --resume.
    train_opts = {**overrides, **data, "SOLVER.EPOCHS": epochs, "TEST.EVAL_EVERY_EPOCHS": every,
                  "SOLVER.CHECKPOINT_EVERY_EPOCHS": max(1, math.ceil(every / 4)),
                  "OUTPUT_DIR": str(run_dir)}
    resume = not args.fresh and _has_checkpoint(run_dir)
    if resume:
        print(f"   continuing the interrupted run in {run_dir} from its last checkpoint",
              flush=True)
    _train_net(config, train_opts, run_dir / "train.log", extra=["--resume"] if resume else (),
               append=resume)
    return _finish(name, description, run_dir, (run_dir / "train.log").read_text(), args,
                   {"calibrated s/it": sec_per_iter, "epochs": epochs,
                    "iterations": epochs * per_epoch}, record=True)


def run_inference_only(name: str, description: str, source_row: Dict, overrides: Dict,
                       run_dir: Path, args) -> Dict:
    """Evaluate the weights of a finished run (the row ``source_row`` of its variant) with other
    inference settings."""
    finished = None if args.fresh else _finished_row(run_dir)
    if finished:
        print(f"== {name}: reusing {run_dir}", flush=True)
        return _with_cells(finished, args, run_dir / BENCH_RUN_FILE)
    print(f"== {name}: {description}", flush=True)
    source_dir = Path(source_row["run_dir"])
    _train_net(str((source_dir / CONFIG_FILE).resolve()), {**overrides, **_data_overrides(args),
                        "MODEL.WEIGHTS": str(source_dir / f"{FINAL_MODEL}.pth"),
                        "OUTPUT_DIR": str(run_dir)},
               run_dir / "eval.log", extra=["--eval-only"])
    return _finish(name, description, run_dir, (run_dir / "eval.log").read_text(), args,
                   {"train min": source_row["train min"], "iterations": source_row["iterations"],
                    "weights of": source_row["variant"]}, record=True)


def _finish(name, description, run_dir: Path, log_text: str, args, extra: Dict,
            record: bool = False) -> Dict:
    """The row of a finished run; with ``record``, also saved in the run (bench_run.json) for
    the next invocation to reuse (never in a user's ``--recipe-run``)."""
    row = {"variant": name, "what": description, "budget min": args.budget_label}
    row.update(extra)
    if "train min" not in row:
        row["train min"] = round(_train_minutes(log_text), 1)
    seconds = _inference_seconds(log_text)
    row["inference s/img"] = round(seconds, 2) if seconds is not None else None
    row.update(_score(_results_file(run_dir), args))
    row["cells"] = _cells(_results_file(run_dir), args, row)
    row["curve"] = _curves(run_dir)
    row["run_dir"] = str(run_dir)
    if record:
        (run_dir / BENCH_RUN_FILE).write_text(json.dumps(row, indent=1))
    return row


def recipe_row(run_dir: Path, args) -> Dict:
    """The row of a finished run of the native-scale config (``--recipe-run``)."""
    log_text = (run_dir / LOG_FILE).read_text()
    iters = re.findall(r"iter: (\d+) ", log_text)
    return _finish("recipe", "native-scale config as written", run_dir, log_text, args,
                   {"iterations": int(iters[-1]) + 1 if iters else None,
                    "command": _train_command(log_text)})


def _train_command(log_text: str) -> str:
    """The ``tools/train_net.py`` command line of a run, from its logged arguments."""
    config = re.search(r"Command line arguments: Namespace\(config_file='([^']*)'", log_text)
    opts = re.search(r"Command line arguments: Namespace\(.*opts=(\[.*\])\)", log_text)
    if not config:
        return ""
    words = ["tools/train_net.py", "--config-file", config.group(1)]
    for word in ast.literal_eval(opts.group(1)) if opts else []:  # as a shell user types them
        words.append(f'"{word}"' if re.search(r"[^\w./:-]", word) else word)
    return " ".join(words)


# ----------------------------------------------------------------------------- report

COLUMNS = ["variant", "what", "train min", "calibrated s/it", "iterations", "inference s/img",
           "AP50 (grader)",
           "AP (grader)", f"AP50 @{HIGH_CAP}", f"AP @{HIGH_CAP}", "PQ", "SQ", "DQ", "mPQ", "AJI",
           "Dice", "F1"]


GAINS = ["gain PQ", f"gain AP50 @{HIGH_CAP}"]
CELL_COLUMNS = ["setting", "overlaps", "score >=", "PQ", "DQ", "SQ", "AJI", "mPQ", "F1", "cells",
                "AP50 (grader)", f"AP50 @{HIGH_CAP}"]
CELLS_NOTE = (
    "The cells of an image are its detections scoring at least a threshold, painted into one "
    "instance map (`seg_project.data.instance_map`). The rows: score >= 0.5 with the higher "
    "score winning contested pixels and nothing dropped (what the tables above report); the "
    "same with the overlap rule (`TEST.INSTANCE_MAP`: a cell left with less than half its "
    "pixels by higher-scored ones is dropped, so a duplicate detection of a nucleus is no "
    "false-positive sliver); and at the threshold of highest PQ on the grid 0.05..0.95, "
    "without and with the rule. The threshold is chosen on the test images the figures are "
    "reported on, so it is 2-fold cross-validated: each half of the 14 images is scored at the "
    "threshold chosen on the other half (the two thresholds shown), and the halves are pooled. "
    "AP50 is the submission's, every detection per class, the same in each row "
    "(`benchmarks/bench_cells.py --rule-grid` prints every rule of the grid).")


def _with_gains(rows: List[Dict]) -> List[Dict]:
    """Rows with their PQ and high-cap AP50 minus the baseline's (what each lever gave): the
    recipe's in a table that has it, else the quick-config baseline's."""
    base = next((r for r in rows if r["variant"] == "recipe"), None) or \
        next((r for r in rows if r["variant"] == "baseline"), None)
    out = []
    for row in rows:
        row = dict(row)
        if base is not None:
            for gain, key in zip(GAINS, ["PQ", f"AP50 @{HIGH_CAP}"]):
                if row.get(key) is not None and base.get(key) is not None:
                    row[gain] = row[key] - base[key]
        out.append(row)
    return out


def _plot_curves(rows: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        curve = row.get("curve") or []
        if not curve:
            continue
        its = [p["iteration"] for p in curve]
        axes[0].plot(its, [p["segm/AP50"] for p in curve], marker="o", label=row["variant"])
        axes[1].plot(its, [p["pathology/PQ"] or 0 for p in curve], marker="o",
                     label=row["variant"])
    for ax, title in zip(axes, ["segm AP50 (grader-exact, %)", "PQ (score >= 0.5)"]):
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _pictures(rows: List[Dict], args, out_dir: Path, image: str) -> List[Path]:
    """Ground truth beside the predictions (score >= 0.5) of each given row, one test image."""
    paths = []
    for row in rows:
        target = out_dir / row.get("picture", row["variant"])
        command = [sys.executable, str(REPO_ROOT / "tools" / "visualize.py"), "--results",
                   str(_results_file(Path(row["run_dir"]))), "--gt-root", str(args.data),
                   "--split", "test", "--names", image, "--out", str(target), "--max-size",
                   "1400", "--overwrite"]
        subprocess.run(command, check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
        paths += [_as_jpeg(png) for png in sorted(target.glob("*.png"))]
    return paths


def _as_jpeg(png: Path) -> Path:
    """The picture as a JPEG beside it (a tenth of the PNG's size for H&E), the PNG removed."""
    from PIL import Image

    jpeg = png.with_suffix(".jpg")
    with Image.open(png) as picture:
        picture.convert("RGB").save(jpeg, quality=85)
    png.unlink()
    return jpeg


# ACCURACY.md text between these markers is written by hand (or by another benchmark, e.g. the
# issue-20 tables of benchmarks/bench_cells.py) and carried over when the file is rewritten.
KEPT_START, KEPT_END = "<!-- kept: not written by bench_accuracy -->", "<!-- /kept -->"


def kept_sections(path: Path) -> List[str]:
    """The marked sections of an existing ``path`` (markers included), in order."""
    if not path.exists():
        return []
    return re.findall(re.escape(KEPT_START) + r".*?" + re.escape(KEPT_END), path.read_text(),
                      flags=re.DOTALL)


def _machine_text(machine: Dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in machine.items())


def write_report(store: Dict, args, path: Path) -> None:
    kept = kept_sections(path)
    lines = ["# Accuracy on CoNSeP (benchmarks/bench_accuracy.py)", "",
             "Written by `python benchmarks/bench_accuracy.py`; see its docstring for the "
             "method. Train on CoNSeP `train/` (27 images), score on `test/` (14 images): "
             "grader-exact COCO AP (at most 100 detections per image and class, as the "
             f"course's grader), high-cap AP (at most {HIGH_CAP}), pathology metrics at "
             "score >= 0.5 without the overlap rule (the higher score wins a contested pixel; "
             "see the cells tables below for the rule and a chosen threshold). AP in %, the "
             "others in [0, 1].", ""]
    machine = store.get("machine", {})
    if machine:
        lines += ["Machine (the 10-minute budget, the recipe run and the ceiling): "
                  + _machine_text(machine), ""]
    if "ceiling" in store:
        row = store["ceiling"]
        lines += ["**The grader's cap.** The grader counts at most 100 detections per image and "
                  "class; CoNSeP test images hold up to 759 nuclei of one class, so even the "
                  "ground truth itself, submitted as predictions, scores only "
                  f"**{row['AP50 (grader)']:.1f}** grader-exact segm AP50 (100 at a cap of "
                  f"{HIGH_CAP}). Compare grader-exact figures against that ceiling, and models "
                  "against each other with the high-cap AP and the pathology metrics.", ""]
    for budget, runs in sorted(store["budgets"].items(), key=lambda kv: float(kv[0])):
        rows = [runs[v] for v in ALL_VARIANTS if v in runs]
        lines += [f"## Each lever at a {budget}-minute training budget", ""]
        budget_machine = store.get("machines", {}).get(budget)
        if budget_machine:
            lines += ["Machine: " + _machine_text(budget_machine), ""]
        lines += [markdown_table(_with_gains(rows), COLUMNS + GAINS), ""]
        for note in store.get("budget_notes", {}).get(budget, []):
            lines += [note, ""]
        curve_file = f"accuracy/curves_{budget}min.png"
        _plot_curves(rows, path.parent / curve_file)
        lines += [f"![curves]({curve_file})", ""]
    best = [store["budgets"][b][BEST] for b in sorted(store["budgets"], key=float)
            if BEST in store["budgets"][b]]
    if len(best) > 1:
        lines += [f"## The best combination ({BEST}: {TRAINED[BEST][0]}) at each budget", "",
                  markdown_table([{**row, "variant": f"{row['variant']} "
                                   f"({row['budget min']} min)"} for row in best], COLUMNS), ""]
        _plot_curves([{**row, "variant": f"{row['budget min']} min"} for row in best],
                     path.parent / "accuracy/curves_best.png")
        lines += ["![curves](accuracy/curves_best.png)", ""]
    if store.get("recipe"):
        rows = store["recipe"]
        lines += ["## The native-scale recipe, trained as its config says", "",
                  f"Trained by `{rows[0].get('command', '')}`; `recipe_tiles` is the same "
                  "model predicting in 512 px tiles.", "", markdown_table(rows, COLUMNS), ""]
        _plot_curves(rows[:1], path.parent / "accuracy/curves_recipe.png")
        lines += ["![curves](accuracy/curves_recipe.png)", ""]
    cell_rows = [row for runs in store["budgets"].values() for row in runs.values()
                 if row.get("cells")] + [row for row in store.get("recipe", []) if row.get("cells")]
    if cell_rows:
        lines += ["## One cell per nucleus: the overlap rule and a chosen threshold", "",
                  CELLS_NOTE, ""]
        for row in cell_rows:
            lines += [f"**{row['variant']}** ({row['what']}, {row.get('budget min', '')} min):",
                      "", markdown_table(row["cells"], CELL_COLUMNS), ""]
    for picture in store.get("pictures", []):
        lines += [f"![{picture}]({picture})", ""]
    for section in kept:
        lines += [section, ""]
    lines += ["## Published anchors", "", markdown_table(PUBLISHED), ""]
    if store.get("notes"):
        lines += ["## Notes", ""]
        for note in store["notes"]:
            lines += [note, ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.budget_label = "smoke" if args.quick else f"{args.minutes:g}"
    args.budget_dir = args.work_dir / (f"{args.budget_label}min" if not args.quick else "smoke")
    if args.quick:
        args.data = _smoke_data(args.data, args.work_dir / "smoke_data")
    num_images = sum(1 for p in (args.data / "train").iterdir() if (p / "image.tif").exists())
    started = time.time()
    if args.calibrate_only:
        for name in args.variants:
            if name in TRAINED:
                print(f"{name}: {step_seconds(name, args):.3f} s/it", flush=True)
        return 0
    rows = {}
    for name in args.variants:
        if name in TRAINED:
            rows[name] = run_trained(name, args, num_images)
    for name in args.variants:
        if name in INFERENCE_ONLY:
            description, source, overrides = INFERENCE_ONLY[name]
            source_row = rows.get(source) or _finished_row(args.budget_dir / source)
            if source_row is None:
                raise SystemExit(f"{name} predicts with the weights of {source}, which has no "
                                 f"finished run in {args.budget_dir}: add {source} to --variants")
            rows[name] = run_inference_only(name, description, source_row, overrides,
                                            args.budget_dir / name, args)
    recipe = []
    if args.recipe_run:
        recipe.append(recipe_row(args.recipe_run, args))
        recipe.append(run_inference_only("recipe_tiles", RECIPE_TILES[0], recipe[0],
                                         RECIPE_TILES[1], args.work_dir / "recipe_tiles", args))
    # (the --recipe-run rows are kept apart: the budget's own "recipe" variant shares the name)
    print(markdown_table(list(rows.values()) + recipe, COLUMNS))
    print(f"bench_accuracy: {(time.time() - started) / 60:.1f} minutes")
    if args.quick or args.no_report:
        return 0
    store_path = REPO_ROOT / "benchmarks" / "accuracy_results.json"
    store = json.loads(store_path.read_text()) if store_path.exists() else {"budgets": {}}
    # Budgets may be measured on different machines (their calibrations say how fast each
    # was): each budget keeps its own; the ground truth's ceiling does not depend on one.
    store.setdefault("machines", {})[args.budget_label] = machine_info(torch.device("cpu"))
    if "ceiling" not in store or args.fresh:
        store["ceiling"] = ceiling_row(args)
    budget = store["budgets"].setdefault(args.budget_label, {})
    budget.update(rows)
    if recipe:
        store["recipe"] = recipe
    if args.note:
        store.setdefault("budget_notes", {})[args.budget_label] = args.note
    out_dir = REPO_ROOT / "benchmarks" / "accuracy"
    out_dir.mkdir(exist_ok=True)
    # Pictures of this budget's baseline, combined, recipe and best rows, from their saved
    # predictions; pictures of other budgets (or of runs whose folders are gone) are kept, and
    # every picture keeps its place in the report (a redrawn one is not moved to the end).
    picture_rows = [{**r, "picture": f"{r['variant']}_{args.budget_label}min"}
                    for r in budget.values() if r["variant"] in PICTURED]
    picture_rows += [{**r, "picture": r["variant"]} for r in store.get("recipe", [])[:1]]
    picture_rows = [r for r in picture_rows if _results_file(Path(r["run_dir"])).exists()]
    image = args.picture or sorted(p.name for p in (args.data / "test").iterdir()
                                   if p.is_dir())[0]
    new = [str(p.relative_to(REPO_ROOT / "benchmarks"))
           for p in _pictures(picture_rows, args, out_dir, image)]
    kept = [p for p in store.get("pictures", []) if (REPO_ROOT / "benchmarks" / p).exists()]
    store["pictures"] = kept + [p for p in new if p not in kept]
    store_path.write_text(json.dumps(store, indent=1))
    write_report(store, args, REPO_ROOT / "benchmarks" / "ACCURACY.md")
    print(f"wrote {store_path} and benchmarks/ACCURACY.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
