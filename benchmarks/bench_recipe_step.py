"""Where a training step of the native-scale recipe goes, in float32 and in bfloat16 autocast.

The recipe (``configs/mask_rcnn_R_18_FPN_cells_native_scale.yaml``: ResNet-18 + FPN with
GroupNorm from random weights, 4 crops of 256 px from CoNSeP ``train/`` per step) is built as
``tools/train_net.py`` builds it (``CellsTrainer``'s model, optimizer and training loader) and
stepped as ``MixedPrecisionTrainer.run_step`` steps it. Each part is the wall time of one named
call, summed over the timed steps (a part marked · lies within the one above it):

- data: the next batch from the loader (reading, decoding masks, crops, flips, rotations, stain
  jitter, copy-paste when enabled), on the main process when ``DATALOADER.NUM_WORKERS`` is 0;
- forward: backbone + FPN, RPN (anchor labelling and losses included), RoI sampling (proposal
  matching), box head (pooling, head, predictor, losses), mask head (pooling, targets, head,
  loss);
- backward; optimizer (zero_grad + step, gradient clipping included).

Then the operators that take most of the step's time (``torch.profiler``, self CPU time, one
step). Variants (``--variants``) are named sets of config overrides; each builds its model and
loader from the config's seed and runs its warm-up and timed steps in turn, in this one process.

Reading (2 CPU cores with native bfloat16, as measured when this was written): the backward
pass is about 60 % of a float32 step: oneDNN's convolution backward, and torchvision's serial
CPU ``roi_align`` backward (about 20 %); the mask head is the largest forward part (about 16 %);
data on the main process about 7 %. bfloat16 autocast speeds the convolutions up (1.3-1.5x a
step) but not ``roi_align``, whose backward grows to a quarter of the step. A data worker makes
the step slower on 2 cores (it takes a core from the convolutions). Sampling 128 RoIs per crop
instead of 256 (and keeping 500 proposals instead of 1,000) halves the mask head's and
``roi_align``'s work: 1.25x a step in float32, 2.0x with bfloat16. Copy-paste costs about 10 %
(more instances per crop, so more positive RoIs, and a second image to read).

Run: ``python benchmarks/bench_recipe_step.py [--steps 12] [--variants float32 bfloat16]``.
"""

import argparse
import statistics
import sys
import time
from collections import defaultdict
from typing import Dict, List, Optional

import torch
from common import DEFAULT_DATA, REPO_ROOT, machine_info, markdown_table, seed_everything

TITLE = "Profile of the native-scale recipe's training step (float32, bfloat16, budgets)"
NATIVE_CONFIG = REPO_ROOT / "configs" / "mask_rcnn_R_18_FPN_cells_native_scale.yaml"
CLASS_NAMES = ["other", "inflammatory", "epithelial", "spindle"]
# The precision of each variant is pinned: the config itself trains in bfloat16 where native.
FLOAT32 = ["SOLVER.AMP.ENABLED", "False"]
BFLOAT16 = ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.CPU_DTYPE", "bfloat16"]
LEAN_ROIS = ["MODEL.RPN.POST_NMS_TOPK_TRAIN", "500", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "128"]
# name -> config overrides (KEY, VALUE pairs as on the command line)
VARIANTS = {
    "float32": FLOAT32,
    "bfloat16": BFLOAT16,
    "bfloat16, 1 data worker": BFLOAT16 + ["DATALOADER.NUM_WORKERS", "1"],
    "float32, 500 proposals, 128 RoIs": FLOAT32 + LEAN_ROIS,
    "bfloat16, 500 proposals, 128 RoIs": BFLOAT16 + LEAN_ROIS,
    "float32, copy-paste": FLOAT32 + ["INPUT.COPY_PASTE.ENABLED", "True"],
}
# (label, depth, object path in the model, method): timed calls.
PARTS = [
    ("forward: preprocess (normalize, pad)", 0, "", "preprocess_image"),
    ("forward: backbone + FPN", 0, "backbone", "forward"),
    ("forward: RPN", 0, "proposal_generator", "forward"),
    ("anchor labelling", 1, "proposal_generator", "label_and_sample_anchors"),
    ("forward: RoI sampling (proposal matching)", 0, "roi_heads", "label_and_sample_proposals"),
    ("forward: box head (pool, head, losses)", 0, "roi_heads", "_forward_box"),
    ("forward: mask head (pool, targets, head, loss)", 0, "roi_heads", "_forward_mask"),
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        metavar="NAME", help=f"default all: {list(VARIANTS)}")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CoNSeP root")
    parser.add_argument("--quick", action="store_true", help="2 timed steps, 1 warm-up")
    return parser.parse_args(argv)


def build(opts: List[str], data: str):
    """Model, optimizer, loader iterator and AMP dtype of the recipe with ``opts``."""
    from seg_project.config import load_config, register_datasets_from_config
    from seg_project.engine.mixed_precision import cpu_amp_dtype
    from seg_project.engine.trainer import CellsTrainer

    cfg = load_config(NATIVE_CONFIG, [
        "DATASETS.CELLS.ROOT", data, "DATASETS.TRAIN", "('cells_trainval',)", "DATASETS.TEST",
        "()", "DATASETS.CELLS.CLASS_NAMES", str(CLASS_NAMES), "DATALOADER.NUM_WORKERS", "0",
        *opts])
    register_datasets_from_config(cfg)
    seed_everything(cfg.SEED)
    model = CellsTrainer.build_model(cfg)
    model.train()
    optimizer = CellsTrainer.build_optimizer(cfg, model)
    loader = iter(CellsTrainer.build_train_loader(cfg))
    dtype = None
    if cfg.SOLVER.AMP.ENABLED:
        amp, _ = cpu_amp_dtype(cfg.SOLVER.AMP.CPU_DTYPE)
        dtype = None if amp == torch.float32 else amp
    return model, optimizer, loader, dtype


def _timed(totals: Dict[str, float], label: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start
    return wrapper


def _total_loss(model, data) -> torch.Tensor:
    return sum(model(data).values())


def profile_variant(name: str, opts: List[str], args) -> Dict:
    model, optimizer, loader, dtype = build(opts, args.data)
    totals: Dict[str, float] = defaultdict(float)
    for label, _, path, method in PARTS:
        owner = model.get_submodule(path) if path else model
        setattr(owner, method, _timed(totals, label, getattr(owner, method)))
    step_times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            totals.clear()
        start = time.perf_counter()
        data = _timed(totals, "data (loader, main process)", lambda: next(loader))()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            losses = _timed(totals, "forward", _total_loss)(model, data)
        _timed(totals, "optimizer (zero_grad + step)", optimizer.zero_grad)()
        _timed(totals, "backward", losses.backward)()
        _timed(totals, "optimizer (zero_grad + step)", optimizer.step)()
        if step >= args.warmup:
            step_times.append(time.perf_counter() - start)
    step = statistics.mean(step_times)
    rows = [{"part": "step (mean)", "s/step": step, "share": 1.0}]
    order = ["data (loader, main process)", "forward"]
    labels = order + [label for label, *_ in PARTS] + ["backward", "optimizer (zero_grad + step)"]
    depth = {label: d + 1 for label, d, *_ in PARTS}
    for label in labels:
        seconds = totals[label] / args.steps
        rows.append({"part": "· " * depth.get(label, 0) + label, "s/step": seconds,
                     "share": seconds / step})
    ops = top_operators(model, optimizer, loader, dtype)
    return {"variant": name, "rows": rows, "operators": ops, "step": step}


def top_operators(model, optimizer, loader, dtype, count: int = 8) -> List[Dict]:
    """The operators of one step with the most self CPU time (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    data = next(loader)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            losses = sum(model(data).values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"operator": e.key, "self s": e.self_cpu_time_total / 1e6,
             "share": e.self_cpu_time_total / total, "calls": e.count}
            for e in events[:count]]


def run(argv=None, notes: Optional[List[str]] = None) -> Dict[str, List[Dict]]:
    """Profile the variants; returns the tables (title -> rows), as ``run_all.py`` expects."""
    from detectron2.utils.events import EventStorage

    args = parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    with EventStorage():  # the RPN and RoI heads log to it
        results = [profile_variant(name, VARIANTS[name], args) for name in args.variants]
    base = results[0]
    tables = {f"Seconds per step ({args.steps} timed steps after {args.warmup} warm-up, "
              "4 crops of 256 px)": [
                  {"variant": r["variant"], "s/step": r["step"],
                   f"speed vs {base['variant']}": base["step"] / r["step"]} for r in results]}
    for result in results:
        tables[f"{result['variant']}: parts"] = result["rows"]
        tables[f"{result['variant']}: operators (one step, self CPU time)"] = result["operators"]
    if notes is not None:
        notes.append(f"Threads: {torch.get_num_threads()}. Each variant builds the model from "
                     "the same seed; its batches are its own loader's (copy-paste and the "
                     "RoI budgets change what a step holds).")
    return tables


def main(argv=None) -> int:
    info = machine_info(torch.device("cpu"))
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    for title, rows in run(argv).items():
        print(f"\n## {title}\n")
        print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
