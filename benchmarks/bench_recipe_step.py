"""Where a training step of the native-scale recipe goes, in float32 and in bfloat16 autocast.

The recipe (``configs/mask_rcnn_R_18_FPN_cells_native_scale.yaml``: ResNet-18 + FPN with
GroupNorm from random weights, 4 crops of 256 px from CoNSeP ``train/`` per step) is built as
``tools/train_net.py`` builds it (``CellsTrainer``'s model, optimizer and training loader) and
stepped as ``MixedPrecisionTrainer.run_step`` steps it. Each part is the wall time of one named
call, summed over the timed steps (nested parts are indented; a part includes its children):

- data: the next batch from the loader (reading, decoding masks, crops, flips, rotations, stain
  jitter, copy-paste when enabled), on the main process when ``DATALOADER.NUM_WORKERS`` is 0;
- forward: backbone + FPN, RPN (anchor labelling and losses included), RoI sampling (proposal
  matching), box head (pooling, head, predictor, losses), mask head (pooling, targets, head,
  loss);
- backward; optimizer (zero_grad + step, gradient clipping included).

Then the operators that take most of the step's time (``torch.profiler``, self CPU time, one
step). Variants (``--variants``) are named sets of config overrides; each runs its warm-up and
timed steps in turn, in this one process, on the same batches (the loader is re-seeded).

Run: ``python benchmarks/bench_recipe_step.py [--steps 12] [--variants float32 bfloat16]``.
"""

import argparse
import statistics
import sys
import time
from collections import defaultdict
from typing import Dict, List

import torch
from common import DEFAULT_DATA, REPO_ROOT, machine_info, markdown_table, seed_everything

NATIVE_CONFIG = REPO_ROOT / "configs" / "mask_rcnn_R_18_FPN_cells_native_scale.yaml"
CLASS_NAMES = ["other", "inflammatory", "epithelial", "spindle"]
# name -> config overrides (KEY, VALUE pairs as on the command line)
VARIANTS = {
    "float32": [],
    "bfloat16": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.CPU_DTYPE", "bfloat16"],
    "bfloat16, 1 data worker": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.CPU_DTYPE",
                                "bfloat16", "DATALOADER.NUM_WORKERS", "1"],
    "bfloat16, 500 proposals, 128 RoIs": [
        "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.CPU_DTYPE", "bfloat16",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "500", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "128"],
    "float32, copy-paste": ["INPUT.COPY_PASTE.ENABLED", "True"],
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
    from seg_project.config import get_seg_project_cfg, register_datasets_from_config
    from seg_project.engine.mixed_precision import cpu_amp_dtype
    from seg_project.engine.trainer import CellsTrainer

    cfg = get_seg_project_cfg()
    cfg.merge_from_file(str(NATIVE_CONFIG))
    cfg.merge_from_list(["DATASETS.CELLS.ROOT", data, "DATASETS.TRAIN", "('cells_trainval',)",
                         "DATASETS.TEST", "()", "DATASETS.CELLS.CLASS_NAMES", str(CLASS_NAMES),
                         "DATALOADER.NUM_WORKERS", "0", *opts])
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    info = machine_info(torch.device("cpu"))
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    from detectron2.utils.events import EventStorage

    with EventStorage():  # the RPN and RoI heads log to it
        results = [profile_variant(name, VARIANTS[name], args) for name in args.variants]
    base = results[0]["step"]
    print(f"\n## Step of the native-scale recipe ({args.steps} timed steps after {args.warmup} "
          "warm-up, 4 crops of 256 px)\n")
    print(markdown_table([{"variant": r["variant"], "s/step": r["step"],
                           f"speed vs {results[0]['variant']}": base / r["step"]}
                          for r in results]))
    for result in results:
        print(f"\n### {result['variant']}: parts\n")
        print(markdown_table(result["rows"]))
        print(f"\n### {result['variant']}: operators (one step, self CPU time)\n")
        print(markdown_table(result["operators"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
