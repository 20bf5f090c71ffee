"""Seconds per training iteration: torchvision v2 (the report's), v1, and ours (Detectron2).

Batch 2 of CoNSeP training images (1000x1000) resized to S x S (512 and 800), the same images
for every pipeline: the ones whose instance counts lie closest to the split's median. Batches
are prepared before timing (data loading is a separate figure); only the training step is
timed. The pipelines take turns (round-robin, starting runner rotated every round) in one
process, so machine noise hits all alike; warm-up rounds are excluded.

What a timed step holds:

- torchvision: moving the batch to the device, the model's own resize of the image and of
  the full-size N x 1000 x 1000 masks (GeneralizedRCNNTransform), forward, backward, SGD
  (autocast + GradScaler on CUDA, the report's AMP).
- ours: the project's step, ``CellsTrainer.build_step_trainer(cfg, ...).run_step()``
  (``SimpleTrainer`` in float32 on a CPU, ``MixedPrecisionTrainer`` with float16 AMP on
  CUDA) on batches from ``CellsDatasetMapper(cfg, is_train=True)`` (image resized to S x S,
  masks kept as ``CroppedMasks``: crops at source resolution, resized only where the mask
  loss samples them), prepared untimed; the config is ``configs/Base-Cells-RCNN-FPN.yaml``
  (with ``CellsRPN``) made comparable (see ``common.ours_config``).
- variants of ours, on the same batches, where asked for: ``bf16 autocast``
  (``MixedPrecisionTrainer(..., cpu_dtype="bfloat16")``, the CPU AMP of
  ``SOLVER.AMP.CPU_DTYPE``) and ``dense RPN labelling`` (Detectron2's own ``RPN``: the
  anchor labelling before ``CellsRPN``).

Run: ``python benchmarks/bench_training.py [--quick] [--device cpu] [--sizes 512 800]
[--cpu-amp-sizes 512] [--dense-rpn-sizes 512]``.
"""

import argparse
import copy
import gc
import itertools
import math
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import torch
from common import (
    OURS_VARIANTS,
    PIPELINES,
    PeakMemory,
    Stopwatch,
    add_common_args,
    batches_of,
    describe_images,
    describe_model,
    format_bytes,
    load_consep,
    ours_config,
    resolve_device,
    seed_everything,
    select_images,
)
from torchvision_reference import CellsDataset, TrainStep, build_model, collate, targets_to
from tqdm import tqdm

from seg_project.engine.mixed_precision import cpu_amp_dtype, native_cpu_bf16

BATCH_SIZE = 2
ALL_PIPELINES = {**PIPELINES, **OURS_VARIANTS}
TITLE = "Training: seconds per iteration (batch 2)"


class TorchvisionRunner:
    """The report's training step on a cycle of prepared (CPU) batches."""

    def __init__(self, version: str, size: int, device: torch.device, batches: Sequence):
        self.name = ALL_PIPELINES[version]
        self.device = device
        self.train_step = TrainStep(build_model(version, size), device)
        self.model_info = describe_model(self.train_step.model)
        self._batches = itertools.cycle(batches)
        self.last_loss = float("nan")

    def step(self) -> None:
        """One training iteration on the next batch (moved to the device, as the report's
        loop does)."""
        images, targets = targets_to(*next(self._batches), self.device)
        self.last_loss = self.train_step(images, targets)


class OursRunner:
    """The project's trainer step on a cycle of prepared batches."""

    def __init__(self, name: str, trainer, model_info: Dict):
        self.name = name
        self.trainer = trainer
        self.model_info = model_info
        self.iter = 0
        self.last_loss = float("nan")

    def step(self) -> None:
        """One training iteration on the next prepared batch."""
        from detectron2.utils.events import EventStorage

        with EventStorage(self.iter) as storage:
            self.trainer.iter = self.iter
            self.trainer.storage = storage
            self.trainer.run_step()
            self.last_loss = storage.history("total_loss").latest()
        self.iter += 1


def ours_batches(cfg, records: Sequence[Dict]) -> List[List[Dict]]:
    """Batches of ``cfg.SOLVER.IMS_PER_BATCH`` model inputs made from ``records`` by the
    project's ``CellsDatasetMapper(cfg, is_train=True)``."""
    from seg_project.data.mapper import CellsDatasetMapper

    mapper = CellsDatasetMapper(cfg, is_train=True)
    return [[mapper(copy.deepcopy(r)) for r in batch]
            for batch in batches_of(list(records), cfg.SOLVER.IMS_PER_BATCH)]


def build_ours_runner(size: int, device: torch.device, records: Sequence[Dict],
                      variant: str = "ours", batches: Optional[List] = None) -> OursRunner:
    """The "ours" runner: the project's config (:func:`common.ours_config`), model
    (``CellsTrainer.build_model``), optimizer (``CellsTrainer.build_optimizer``) and inner
    trainer (``CellsTrainer.build_step_trainer``: ``SimpleTrainer``, or
    ``MixedPrecisionTrainer`` with AMP) on batches of 2 from ``CellsDatasetMapper``.

    Args:
        variant: ``"ours"``; ``"ours-bf16"`` (CPU AMP: bfloat16 autocast); or
            ``"ours-dense-rpn"`` (Detectron2's ``RPN`` instead of ``CellsRPN``).
        batches: prepared batches to reuse (made from ``records`` when None).
    """
    from seg_project.engine.trainer import CellsTrainer

    cfg = ours_config(size, device, amp=variant == "ours-bf16",
                      proposal_generator="RPN" if variant == "ours-dense-rpn" else None)
    batches = batches if batches is not None else ours_batches(cfg, records)
    model = CellsTrainer.build_model(cfg)
    model.train()
    optimizer = CellsTrainer.build_optimizer(cfg, model)
    trainer = CellsTrainer.build_step_trainer(cfg, model, itertools.cycle(batches), optimizer)
    return OursRunner(ALL_PIPELINES[variant], trainer, describe_model(model))


def _prepare_torchvision_batches(records: Sequence[Dict]) -> List:
    """Full-size samples of the report's Dataset, collated in batches of 2 (CPU)."""
    dataset = CellsDataset(records)
    samples = [dataset[i] for i in tqdm(range(len(dataset)), desc="torchvision samples",
                                        leave=False)]
    return [collate(batch) for batch in batches_of(samples, BATCH_SIZE)]


def _build_runners(names: Sequence[str], size: int, device: torch.device, records, tv_batches,
                   seed: int) -> List:
    runners, ours_inputs = [], None
    for name in names:
        seed_everything(seed)
        if name.startswith("ours"):
            if ours_inputs is None:  # the same mapped batches for every variant of ours
                ours_inputs = ours_batches(ours_config(size, device), records)
            runners.append(build_ours_runner(size, device, records, name, ours_inputs))
        else:
            runners.append(TorchvisionRunner(name, size, device, tv_batches))
    return runners


def _measure(runners: Sequence, rounds: int, warmup: int, device: torch.device) -> Dict:
    """Round-robin steps; returns ``{runner name: (wall seconds, CPU seconds, peak bytes)}``
    of the measured rounds."""
    times = {r.name: [] for r in runners}
    cpu_times = {r.name: [] for r in runners}
    peaks = {r.name: [] for r in runners}
    progress = tqdm(total=(warmup + rounds) * len(runners), desc="training steps", leave=False)
    for round_index in range(warmup + rounds):
        shift = round_index % len(runners)
        for runner in list(runners[shift:]) + list(runners[:shift]):
            with PeakMemory(device) as memory, Stopwatch(device) as watch:
                runner.step()
            if round_index >= warmup:
                times[runner.name].append(watch.wall)
                cpu_times[runner.name].append(watch.cpu)
                peaks[runner.name].append(memory.peak_bytes)
            progress.set_postfix_str(f"{runner.name}: {watch.wall:.1f} s")
            progress.update()
    progress.close()
    return {name: (times[name], cpu_times[name], peaks[name]) for name in times}


def _rows(size: int, runners: Sequence, measured: Dict, iters_per_epoch: int) -> List[Dict]:
    medians = {name: statistics.median(t) for name, (t, _, _) in measured.items()}
    cpu_medians = {name: statistics.median(c) for name, (_, c, _) in measured.items()}
    ours = PIPELINES["ours"] if PIPELINES["ours"] in medians else None
    batch_size = BATCH_SIZE
    rows = []
    for runner in runners:
        step_times, _, step_peaks = measured[runner.name]
        median = medians[runner.name]
        known_peaks = [p for p in step_peaks if p is not None]
        rows.append({
            "size": f"{size}x{size}",
            "pipeline": runner.name,
            "s/iter (median)": median,
            "min-max": f"{min(step_times):.3g}-{max(step_times):.3g}",
            "CPU s/iter": cpu_medians[runner.name],
            "iters": len(step_times),
            "images/s": batch_size / median,
            "ours / this": None if ours is None else medians[ours] / median,
            "ours / this (CPU)": None if ours is None
            else cpu_medians[ours] / cpu_medians[runner.name],
            f"s/epoch ({iters_per_epoch} it)": median * iters_per_epoch,
            "peak step memory": format_bytes(max(known_peaks) if known_peaks else None),
            "params (M)": runner.model_info["params (M)"],
            "trainable share": runner.model_info["trainable"],
            "BN / FrozenBN": f"{runner.model_info['BatchNorm2d']} / "
                             f"{runner.model_info['FrozenBatchNorm2d']}",
            "last loss": runner.last_loss,
        })
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="input sizes S (default 512 800; --quick: 512)")
    parser.add_argument("--iters", type=int, default=None,
                        help="measured iterations per pipeline and size (default 2, to fit "
                             "run_all's time budget; quick 1)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed warm-up iterations per pipeline and size "
                             "(default 1 at S <= 512, 0 above; quick 0)")
    parser.add_argument("--images", type=int, default=None,
                        help="training images cycled through, in batches of 2 "
                             "(default 4; quick 2)")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES),
                        choices=list(PIPELINES), help="which pipelines to run")
    parser.add_argument("--cpu-amp-sizes", type=int, nargs="*", default=None,
                        help="sizes at which ours also runs with bf16 autocast, CPU only "
                             "(default 512; quick none)")
    parser.add_argument("--dense-rpn-sizes", type=int, nargs="*", default=None,
                        help="sizes at which ours also runs with Detectron2's dense RPN "
                             "labelling, the before of CellsRPN (default none: "
                             "bench_profile measures that before/after)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([512] if quick else [512, 800])
    args.images = args.images if args.images is not None else (2 if quick else 4)
    if args.cpu_amp_sizes is None:
        # bf16 autocast is measured where the CPU has it natively; elsewhere it is emulated
        # (12x slower than float32) and SOLVER.AMP.CPU_DTYPE auto trains in float32 anyway.
        native, _ = native_cpu_bf16()
        args.cpu_amp_sizes = [] if quick or not native else [512]
    if args.dense_rpn_sizes is None:
        args.dense_rpn_sizes = []
    if ((args.iters is not None and args.iters < 1) or (args.warmup or 0) < 0
            or args.images < 1):
        parser.error("--iters and --images must be >= 1 and --warmup >= 0")
    return args


def pipelines_at(size: int, args: argparse.Namespace, device: torch.device) -> List[str]:
    """The pipelines run at ``size``: ``--pipelines`` plus the variants of ours asked for
    there (bf16 autocast only on a CPU: on CUDA ours already runs with float16 AMP)."""
    names = list(args.pipelines)
    if "ours" in names:
        if size in args.cpu_amp_sizes and device.type == "cpu":
            names.append("ours-bf16")
        if size in args.dense_rpn_sizes:
            names.append("ours-dense-rpn")
    return names


def iterations_for(size: int, args: argparse.Namespace) -> int:
    """Measured iterations at ``size``: ``--iters``, else 1 (quick) or 2."""
    if args.iters is not None:
        return args.iters
    return 1 if args.quick else 2


def warmup_for(size: int, args: argparse.Namespace) -> int:
    """Warm-up iterations at ``size``: ``--warmup``, else 0 (quick), 1 (S <= 512) or 0 (the
    process is warm by then; each pipeline's first step at the new size is measured)."""
    if args.warmup is not None:
        return args.warmup
    return 0 if args.quick or size > 512 else 1


def run(argv=None, notes: Optional[List[str]] = None) -> List[Dict]:
    """Run the training benchmark; returns one row per (size, pipeline).

    Args:
        argv: command-line arguments (see ``--help``); default ``sys.argv[1:]``.
        notes: if given, lines describing the run (images used, settings) are appended.
    """
    args = parse_args(argv)
    device = resolve_device(args.device)
    train = load_consep(args.data, "train")
    records = select_images(train, args.images)
    iters_per_epoch = math.ceil(len(train) / BATCH_SIZE)
    settings = [
        f"Images ({len(records)} of {len(train)} CoNSeP train, instances in brackets): "
        f"{describe_images(records)}; batches of {BATCH_SIZE}, cycled.",
        "Warm-up + measured iterations per pipeline: "
        + ", ".join(f"{warmup_for(s, args)} + {iterations_for(s, args)} at S={s}"
                    for s in args.sizes)
        + f"; an epoch of CoNSeP train is {iters_per_epoch} iterations. Models are built "
        "afresh at each size. Variants of ours run on the same mapped batches; their "
        "\"ours / this\" above 1 means the variant is faster than ours.",
    ]
    if device.type == "cpu":
        dtype, reason = cpu_amp_dtype("auto")
        settings.append(f"CPU AMP on this machine (SOLVER.AMP.ENABLED, CPU_DTYPE auto): "
                        f"{reason}." + ("" if args.cpu_amp_sizes else
                                        " The bf16 row is left out (--cpu-amp-sizes forces it)."))
    print("\n".join(settings), file=sys.stderr)
    if notes is not None:
        notes.extend(settings)
    tv_batches = _prepare_torchvision_batches(records) if set(args.pipelines) - {"ours"} else []
    rows = []
    for size in args.sizes:
        runners = _build_runners(pipelines_at(size, args, device), size, device, records,
                                 tv_batches, args.seed)
        measured = _measure(runners, iterations_for(size, args), warmup_for(size, args), device)
        rows.extend(_rows(size, runners, measured, iters_per_epoch))
        del runners, measured
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> List[Dict]:
    """Run and print the table."""
    from common import run_and_print

    return run_and_print(run, TITLE, argv)


if __name__ == "__main__":
    main()
