"""Data loading against the model's step: the share of each iteration spent waiting for data.

The project's trainer, ``CellsTrainer`` (Detectron2's ``build_detection_train_loader`` with
``CellsDatasetMapper``, the inner step of bench_training, its hooks), trains ours (the
config of bench_training at S x S, batch 2) on all 27 CoNSeP training images for a few
iterations, once per ``DATALOADER.NUM_WORKERS``: the reference config's default
(``configs/mask_rcnn_R_50_FPN_cells.yaml``), 2 and 0. From the trainer's event storage:
``data_time`` (seconds ``run_step`` waited for its batch) and ``time`` (seconds of the whole
iteration, hooks included, from ``IterationTimer``, which records it from the third iteration
on). The waiting share is ``data_time / time`` of the iterations that have both (median); the
first iteration's wait (worker start-up and the first batches) is shown apart. The mapper's
own cost, ``CellsDatasetMapper`` on one batch in this process, is in the notes: with 0
workers every iteration pays it; workers prepare batches while the model trains (on a
2-core machine they take CPU time from the step instead).

Run: ``python benchmarks/bench_dataloader.py [--quick] [--device cpu] [--workers 4 2 0]``.
"""

import argparse
import copy
import gc
import logging
import statistics
import sys
import tempfile
import warnings
from typing import Dict, List, Optional

import torch
from common import (
    DEFAULT_DATA,
    REPO_ROOT,
    Stopwatch,
    add_common_args,
    load_consep,
    ours_config,
    resolve_device,
    seed_everything,
    select_images,
)

TITLE = "Data loading: share of each training iteration spent waiting for data"
REFERENCE_CONFIG = REPO_ROOT / "configs" / "mask_rcnn_R_50_FPN_cells.yaml"
DATASET_NAME = "bench_consep_train"
TARGET_SHARE = 0.05
QUIET_LOGGERS = ("detectron2.engine", "detectron2.data", "detectron2.utils.events",
                 "detectron2.checkpoint", "detectron2.solver", "seg_project", "fvcore")


def default_workers() -> int:
    """``DATALOADER.NUM_WORKERS`` of the reference config."""
    from seg_project.config import load_config

    cfg = load_config(REFERENCE_CONFIG)
    return cfg.DATALOADER.NUM_WORKERS


def _trainer_config(size: int, device: torch.device, workers: int, iters: int, output_dir: str,
                    seed: int):
    cfg = ours_config(size, device).clone()
    cfg.defrost()
    cfg.DATASETS.TRAIN = (DATASET_NAME,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.MAX_ITER = iters
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 10 ** 9
    cfg.SOLVER.CHECKPOINTS_TO_KEEP = 1
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = output_dir
    cfg.SEED = seed
    cfg.freeze()
    return cfg


def train_briefly(cfg) -> Dict[str, Dict[int, float]]:
    """Train ``cfg.SOLVER.MAX_ITER`` iterations with ``CellsTrainer``; returns
    ``{"data_time": {iteration: s}, "time": {iteration: s}}`` from its event storage."""
    from seg_project.engine.trainer import CellsTrainer

    for name in QUIET_LOGGERS:  # the trainer's log (model, dataset, metrics) is not the table
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # PyTorch warns that 4 workers exceed its suggestion for 2 cores: measured here.
        warnings.filterwarnings("ignore", message=r"This DataLoader will create")
        trainer = CellsTrainer(cfg)
        trainer.train()
    history = {key: {int(i): float(v) for v, i in trainer.storage.history(key).values()}
               for key in ("data_time", "time")}
    del trainer
    gc.collect()
    return history


def _row(workers: int, default: int, history: Dict[str, Dict[int, float]]) -> Dict:
    data_time, time = history["data_time"], history["time"]
    both = sorted(set(data_time) & set(time))
    shares = [data_time[i] / time[i] for i in both]
    waits = [data_time[i] for i in sorted(data_time) if i > 0]
    share = statistics.median(shares) if shares else None
    return {
        "DATALOADER.NUM_WORKERS": f"{workers} (reference default)" if workers == default
        else str(workers),
        "iterations": len(data_time),
        "first iteration wait s": data_time.get(0),
        "wait s/iter (later, median)": statistics.median(waits) if waits else None,
        "iteration s (median)": statistics.median(time.values()) if time else None,
        "waiting share": share,
        "target < 5 %": None if workers != default or share is None
        else ("holds" if share < TARGET_SHARE else "MISSED"),
    }


def mapper_seconds(size: int, device: torch.device, records: List[Dict], repeats: int = 3):
    """Median seconds of ``CellsDatasetMapper`` mapping ``records`` (one batch) here."""
    from seg_project.data.mapper import CellsDatasetMapper

    mapper = CellsDatasetMapper(ours_config(size, device), is_train=True)
    times = []
    for _ in range(repeats):
        with Stopwatch() as watch:
            for record in records:
                mapper(copy.deepcopy(record))
        times.append(watch.wall)
    return statistics.median(times)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--size", type=int, default=512, help="input size S (default 512)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts (default: the reference config's, 2 and 0; "
                             "quick: the reference config's)")
    parser.add_argument("--iters", type=int, default=3,
                        help="iterations per worker count (default 3: IterationTimer "
                             "records `time` from the third on)")
    args = parser.parse_args(argv)
    if args.iters < 3:
        parser.error("--iters must be >= 3 (IterationTimer skips the first two)")
    return args


def run(argv=None, notes: Optional[List[str]] = None) -> List[Dict]:
    """Run the data-loading benchmark; returns one row per worker count."""
    from seg_project.data.catalog import register_cells

    args = parse_args(argv)
    device = resolve_device(args.device)
    default = default_workers()
    workers = args.workers or ([default] if args.quick else list(dict.fromkeys([default, 2, 0])))
    train_dir = args.data / "train"
    records = load_consep(args.data, "train")
    register_cells(DATASET_NAME, train_dir, cache_dir=False)
    rows = []
    for count in workers:
        print(f"CellsTrainer, {count} workers, {args.iters} iterations", file=sys.stderr,
              flush=True)
        seed_everything(args.seed)
        with tempfile.TemporaryDirectory(prefix="bench-dataloader-") as output_dir:
            cfg = _trainer_config(args.size, device, count, args.iters, output_dir, args.seed)
            rows.append(_row(count, default, train_briefly(cfg)))
    batch = select_images(records, 2)
    mapper_s = mapper_seconds(args.size, device, batch)
    shown = train_dir if args.data != DEFAULT_DATA else "../shared/data/consep/train"
    lines = [
        f"{len(records)} CoNSeP train images ({shown}), {args.size}x{args.size}, batch 2; "
        f"{args.iters} iterations per worker count (`time` exists from the third).",
        f"CellsDatasetMapper alone, in this process: {mapper_s:.2f} s per batch of 2 typical "
        "images (what each iteration waits with 0 workers).",
    ]
    print("\n".join(lines), file=sys.stderr)
    if notes is not None:
        notes.extend(lines)
    return rows


def main(argv=None) -> List[Dict]:
    """Run and print the table."""
    from common import run_and_print

    return run_and_print(run, TITLE, argv)


if __name__ == "__main__":
    main()
