"""Shared pieces of the benchmark scripts: machine description, timing, peak memory, tables.

Benchmarks are scripts that print markdown tables (they are never timed tests). Each script
exposes ``run(argv=None) -> list[dict]`` and uses the helpers here:

- :func:`machine_info`: CPU model, cores, library versions, device (and CUDA device name).
- :func:`median_time`, :func:`timed_call`, :class:`Stopwatch`: wall-clock (and process CPU)
  timing that synchronizes CUDA.
- :class:`PeakMemory`: peak memory of a block (CUDA allocator peak, or this process's RSS
  sampled every ~5 ms on a CPU), as bytes above the level before the block.
- :func:`markdown_table`: rows (dicts) -> a markdown table.
- :func:`add_common_args` / :func:`resolve_device`: ``--device auto|cpu|cuda``, ``--quick``,
  ``--data``.
"""

import argparse
import ctypes
import gc
import os
import platform
import random
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tabulate import tabulate

# Known harmless warnings of the libraries' current versions, silenced so tables stay readable.
for _message in (r"`torch.jit.script` is deprecated", r"torch.meshgrid: in an upcoming release",
                 r"The given NumPy array is not writable"):
    warnings.filterwarnings("ignore", message=_message)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The CoNSeP copy next to the repository (never copied into it): ../shared/data/consep.
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "consep"
NUM_CLASSES = 4  # CoNSeP: other, inflammatory, epithelial, spindle-shaped
# The compared pipelines: key (as in --pipelines) -> name in tables.
PIPELINES = {
    "v2": "torchvision v2 (report)",
    "v1": "torchvision v1",
    "ours": "ours (seg_project R50-FPN)",
}
# Variants of "ours" for before/after figures (training benchmark).
OURS_VARIANTS = {
    "ours-bf16": "ours, CPU AMP (bf16 autocast)",
    "ours-dense-rpn": "ours, Detectron2's dense RPN labelling (before)",
}


# ----------------------------------------------------------------------------- arguments


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--device``, ``--quick``, ``--data`` and ``--seed`` to a benchmark's parser."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where models run (auto: cuda when available, else cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewest iterations and images, 512 px only")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"CoNSeP root with train/ and test/ (default: {DEFAULT_DATA})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the models and of synthetic predictions")
    return parser


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; ``"cuda"`` without CUDA is an error.

    Raises:
        SystemExit: ``cuda`` was asked for but torch sees no CUDA device.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info(device: torch.device) -> Dict[str, str]:
    """What a benchmark ran on: CPU, cores, torch threads, library versions, device."""
    import torchvision

    try:
        import detectron2

        d2_version = detectron2.__version__
    except ImportError:
        d2_version = "not installed"
    info = {
        "CPU": cpu_model(),
        "cores": f"{usable_cores()} usable ({os.cpu_count()} online)",
        "torch threads": str(torch.get_num_threads()),
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": d2_version,
        "device": str(device),
    }
    if device.type == "cuda":
        info["CUDA device"] = torch.cuda.get_device_name(device)
        info["CUDA"] = str(torch.version.cuda)
    return info


# ----------------------------------------------------------------------------- timing


def synchronize(device: Optional[torch.device]) -> None:
    """Wait for queued CUDA work (no-op on a CPU)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall-clock and process CPU seconds of a block, synchronizing CUDA at both ends.

    The CPU time counts every thread of this process; on a machine shared with other jobs it
    moves less than the wall-clock time does.
    """

    def __init__(self, device: Optional[torch.device] = None):
        self.device = device
        self.wall = self.cpu = 0.0
        self._wall = self._cpu = 0.0

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def timed_call(fn: Callable, device: Optional[torch.device] = None):
    """Run ``fn()`` once and return ``(wall seconds, result)``, synchronizing CUDA."""
    with Stopwatch(device) as watch:
        result = fn()
    return watch.wall, result


def median_time(fn: Callable, repeats: int, warmup: int = 1,
                device: Optional[torch.device] = None) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones.

    Raises:
        ValueError: ``repeats`` < 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    return statistics.median(timed_call(fn, device)[0] for _ in range(repeats))


# ----------------------------------------------------------------------------- memory


def _release_free_heap() -> None:
    """Collect garbage and hand glibc's free heap back to the OS, so that memory freed by an
    earlier block does not hide the next block's growth in the RSS."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory of a block, in bytes above the level before it.

    On CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors
    only, not the caching allocator's reserve). On a CPU: a background thread samples this
    process's resident set size from ``/proc/self/statm`` every ``interval`` seconds; the
    result is the peak RSS minus the RSS at the start (``None`` where ``/proc`` is missing).
    The CPU figure includes every allocation of the process (NumPy, PIL, Python objects),
    and a peak shorter than the interval can be missed.

    Example::

        with PeakMemory(device) as mem:
            step()
        print(mem.peak_bytes)
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.peak_bytes: Optional[int] = None
        self._start = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def __enter__(self) -> "PeakMemory":
        _release_free_heap()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        start = _rss_bytes()
        if start is None:
            return self
        self._start = self._peak = start
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
            return
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        rss = _rss_bytes()
        self._peak = max(self._peak, rss or 0)
        self.peak_bytes = self._peak - self._start


def format_bytes(num: Optional[float]) -> str:
    """``1536 -> "1.5 KiB"``; ``None -> "n/a"``."""
    if num is None:
        return "n/a"
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


# ----------------------------------------------------------------------------- tables


def format_value(value) -> str:
    """A table cell: floats with 3 significant digits (thousands grouped), others as text."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def markdown_table(rows: Sequence[Dict], columns: Optional[Sequence[str]] = None) -> str:
    """Rows (dicts) as a markdown table; columns default to the keys in order of appearance."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[format_value(row.get(c)).replace("|", "\\|") for c in columns] for row in rows]
    return tabulate(cells, headers=list(columns), tablefmt="pipe", disable_numparse=True)


def print_table(title: str, rows: Sequence[Dict], notes: Sequence[str] = ()) -> None:
    """Print a titled markdown table and its notes to stdout."""
    print(f"\n### {title}\n")
    print(markdown_table(rows))
    for note in notes:
        print(f"\n{note}")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- data


def load_consep(data_root: Path, split: str) -> List[Dict]:
    """CoNSeP records of ``<data_root>/<split>`` through the project's reader (RLE masks).

    Raises:
        SystemExit: the folder is missing (with a hint to pass ``--data``).
    """
    from seg_project.data.reader import load_annotated_split

    split_dir = Path(data_root) / split
    if not split_dir.is_dir():
        raise SystemExit(f"{split_dir}: CoNSeP split not found; pass --data <folder with train/ "
                         "and test/> (see ../shared/data/README.md)")
    return load_annotated_split(split_dir, NUM_CLASSES)


def select_images(records: Sequence[Dict], count: int) -> List[Dict]:
    """The ``count`` records whose instance counts lie closest to the split's median
    (typical images; ties broken by folder name), returned in folder-name order.

    Raises:
        ValueError: fewer records than ``count``.
    """
    if count > len(records):
        raise ValueError(f"asked for {count} images but the split has {len(records)}")
    median = statistics.median(len(r["annotations"]) for r in records)

    def name(record: Dict) -> str:
        return Path(record["file_name"]).parent.name

    chosen = sorted(records, key=lambda r: (abs(len(r["annotations"]) - median), name(r)))
    return sorted(chosen[:count], key=name)


def describe_images(records: Sequence[Dict]) -> str:
    """``"train_3 (677), train_7 (699)"``: folder names with their instance counts."""
    return ", ".join(f"{Path(r['file_name']).parent.name} ({len(r['annotations'])})"
                     for r in records)


def batches_of(items: Sequence, batch_size: int) -> List[Tuple]:
    """Consecutive batches of ``batch_size`` items (the last one may be shorter)."""
    return [tuple(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


# ----------------------------------------------------------------------------- models


def describe_model(model: torch.nn.Module) -> Dict[str, object]:
    """Size, trainability and norm layers of a model (what random init gave it).

    Returns:
        dict: ``params (M)``, ``trainable`` (share of parameters with ``requires_grad``),
        ``BatchNorm2d`` and ``FrozenBatchNorm2d`` layer counts (torchvision's or Detectron2's
        frozen class, matched by name).
    """
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    modules = list(model.modules())
    return {
        "params (M)": total / 1e6,
        "trainable": trainable / total if total else 0.0,
        "BatchNorm2d": sum(isinstance(m, torch.nn.BatchNorm2d) for m in modules),
        "FrozenBatchNorm2d": sum(type(m).__name__ == "FrozenBatchNorm2d" for m in modules),
    }


BASE_CONFIG = REPO_ROOT / "configs" / "Base-Cells-RCNN-FPN.yaml"
# torchvision's input normalization (ImageNet std, BGR order like Detectron2's PIXEL_MEAN).
IMAGENET_STD_BGR = [57.375, 57.120, 58.395]


def ours_config(size: int, device: torch.device, max_dets: int = 100, amp: bool = False,
                cpu_dtype: str = "bfloat16", proposal_generator: Optional[str] = None):
    """The project's config of "ours" for the benchmarks (frozen).

    ``configs/Base-Cells-RCNN-FPN.yaml`` through ``seg_project.config.load_config`` (so
    the project's RPN, ``CellsRPN``, and its proposal counts), with: R50, random init (no
    weights), trainable BatchNorm (``RESNETS.NORM "BN"``, ``FREEZE_AT 0``: like torchvision
    without weights), torchvision's normalization (ImageNet mean and std: with the zoo's std
    of 1, random init and eval-mode BatchNorm give features ~50x larger than torchvision's,
    degenerate proposals and no detections to time), 4 classes, inputs resized to
    ``size x size`` (CoNSeP images are square) without flips, the report's SGD (lr 0.005,
    momentum 0.9, weight decay 5e-4, batch 2), ``max_dets`` detections per image at score
    threshold 0, no datasets (the benchmarks feed their own batches).

    Args:
        size: the fixed input size S.
        device: where the model runs.
        max_dets: ``TEST.DETECTIONS_PER_IMAGE``.
        amp: ``SOLVER.AMP.ENABLED`` (always on on CUDA, as the report's AMP).
        cpu_dtype: ``SOLVER.AMP.CPU_DTYPE`` when ``amp`` on a CPU.
        proposal_generator: overrides ``MODEL.PROPOSAL_GENERATOR.NAME`` (e.g. Detectron2's
            ``"RPN"``, the dense anchor labelling, for a before/after).
    """
    from seg_project.config import load_config

    cfg = load_config(BASE_CONFIG)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_STD = IMAGENET_STD_BGR
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.DATASETS.CELLS.CLASS_NAMES = [f"class{k}" for k in range(1, NUM_CLASSES + 1)]
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    if proposal_generator:
        cfg.MODEL.PROPOSAL_GENERATOR.NAME = proposal_generator
    cfg.TEST.DETECTIONS_PER_IMAGE = max_dets
    cfg.INPUT.MIN_SIZE_TRAIN = (size,)
    cfg.INPUT.MAX_SIZE_TRAIN = size
    cfg.INPUT.MIN_SIZE_TEST = size
    cfg.INPUT.MAX_SIZE_TEST = size
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.VFLIP_PROB = 0.0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.005
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = 5e-4
    cfg.SOLVER.EPOCHS = 0
    cfg.SOLVER.AMP.ENABLED = amp or device.type == "cuda"
    cfg.SOLVER.AMP.CPU_DTYPE = cpu_dtype
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.freeze()
    return cfg


def run_and_print(run, title: str, argv=None) -> List[Dict]:
    """A benchmark's ``main``: ``rows = run(argv, notes)``, then its table and notes printed."""
    notes: List[str] = []
    rows = run(argv, notes)
    print_table(title, rows, notes)
    return rows
