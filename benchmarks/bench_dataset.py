#!/usr/bin/env python
"""How fast the reader converts annotated folders to Detectron2 records.

For ../shared/data/consep/train (27 images of 1000x1000, 15,555 instances) and the course
sample hw3-sample/train, in-process and after all imports (the OS page cache is warm: the
files were read before timing):

- cold: ``load_annotated_split(..., cache_dir=False)``, the median of 3 runs;
- warm: a conversion-cache hit (the cache written first, then timed), the median of 5 runs;
- baseline: the obvious per-instance loop (for each class file, for each id: the full-size
  ``mask == id`` and ``pycocotools.mask.encode`` of it, plus its bbox and area), one run;
  its RLEs are checked to be identical to the reader's.

"median CPU s" is this process's CPU time: on a busy machine it is the better guide to the
uncontended wall time. Targets (CoNSeP on 2 cores): cold < 2 s, warm < 0.3 s.

Run: ``python benchmarks/bench_dataset.py [--data ../shared/data] [--no-baseline] [--quick]``;
``run(argv, notes)`` returns the result rows (dicts) for ``benchmarks/run_all.py``,
``main()`` prints them as a markdown table.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import detectron2.structures  # noqa: F401  (imported by the reader on first use: not timed)
import numpy as np
import pycocotools.mask as mask_util
from tabulate import tabulate
from tqdm import tqdm

from seg_project.data.image_io import read_image, read_mask
from seg_project.data.reader import CLASS_FILE_RE, IMAGE_FILE, load_annotated_split

TITLE = "Dataset conversion (reader and cache)"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# (name, split folder under the data folder, cold target s, warm target s)
DATASETS = [
    ("consep/train", "consep/train", 2.0, 0.3),
    ("hw3-sample/train", "hw3-sample/train", None, None),
]
NUM_CLASSES = 4


def baseline_convert(split_dir: Path) -> List[Dict]:
    """The per-instance loop the reader replaces: full-size ``mask == id`` and
    ``pycocotools.mask.encode`` per instance. Returns records shaped like the reader's
    (``file_name``, ``annotations`` with ``bbox``, ``area``, ``category_id``,
    ``segmentation``)."""
    records = []
    folders = sorted(p for p in Path(split_dir).iterdir() if p.is_dir())
    desc = f"baseline {split_dir.parent.name}/{split_dir.name}"
    for folder in tqdm(folders, desc=desc, unit="image"):
        height, width = read_image(folder / IMAGE_FILE).shape[:2]
        annotations = []
        for path in sorted(folder.glob("class*.tif")):
            match = CLASS_FILE_RE.match(path.name)
            mask = read_mask(path)
            for instance_id in np.unique(mask)[1:]:
                rle = mask_util.encode(np.asfortranarray(mask == instance_id, dtype=np.uint8))
                annotations.append({
                    "bbox": [int(v) for v in mask_util.toBbox(rle)],
                    "area": int(mask_util.area(rle)),
                    "category_id": int(match.group(1)) - 1,
                    "segmentation": {"size": [height, width],
                                     "counts": rle["counts"].decode("ascii")},
                })
        records.append({"file_name": str(folder / IMAGE_FILE), "annotations": annotations})
    return records


def _keys(records: List[Dict]) -> List:
    return sorted((r["file_name"], a["category_id"], a["segmentation"]["counts"],
                   tuple(a["bbox"]), a["area"]) for r in records for a in r["annotations"])


def _timed(function: Callable, runs: int):
    """((median wall seconds, median CPU seconds of this process), last result) of ``runs``
    calls. On a busy machine the CPU time is the better guide to the uncontended time."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return (statistics.median(wall), statistics.median(cpu)), result


def _row(dataset, method, records, runs, seconds, target=None, **extra) -> Dict:
    wall, cpu = seconds
    return {
        "benchmark": "dataset_conversion", "dataset": dataset, "method": method,
        "images": len(records), "instances": sum(len(r["annotations"]) for r in records),
        "runs": runs, "median_s": round(wall, 4), "median_cpu_s": round(cpu, 4),
        "target_s": target, "meets_target": None if target is None else wall < target,
        **extra,
    }


def bench_split(name: str, split_dir: Path, cold_target, warm_target, cold_runs: int,
                warm_runs: int, baseline: bool) -> List[Dict]:
    """Result rows (cold, warm and optionally baseline) for one split folder."""
    split_dir = split_dir.resolve()
    cold_s, records = _timed(lambda: load_annotated_split(split_dir, NUM_CLASSES,
                                                          cache_dir=False), cold_runs)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        load_annotated_split(split_dir, NUM_CLASSES, cache_dir=cache)  # fills the cache
        warm_s, warm = _timed(lambda: load_annotated_split(split_dir, NUM_CLASSES,
                                                           cache_dir=cache), warm_runs)
    if warm != records:
        raise RuntimeError(f"{split_dir}: the cached records differ from a fresh conversion")
    rows = [_row(name, "reader, cold (no cache)", records, cold_runs, cold_s, cold_target),
            _row(name, "reader, warm (cache hit)", warm, warm_runs, warm_s, warm_target)]
    if baseline:
        base_s, base = _timed(lambda: baseline_convert(split_dir), 1)
        identical = _keys(base) == _keys(records)
        rows.append(_row(name, "baseline: full-size mask + encode per instance", base, 1,
                         base_s, identical_rles=identical))
        rows[0]["speedup_vs_baseline"] = round(base_s[0] / cold_s[0], 1)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark of the dataset conversion.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder holding consep/ and hw3-sample/ (default {DEFAULT_DATA})")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the per-instance baseline (about a minute on CoNSeP)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 cold and 1 warm run, no baseline")
    return parser


def run(argv: Optional[List[str]] = None, notes: Optional[List[str]] = None) -> List[Dict]:
    """Run the benchmark; returns one dict per (dataset, method). Datasets that are not
    present are skipped, with a line on stderr and in ``notes`` (if given)."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.cold_runs, args.warm_runs, args.no_baseline = 1, 1, True
    rows = []
    for name, relative, cold_target, warm_target in DATASETS:
        split_dir = args.data / relative
        if not split_dir.is_dir():
            message = f"Skipped {name}: {split_dir} not found."
            print(message, file=sys.stderr)
            if notes is not None:
                notes.append(message)
            continue
        rows += bench_split(name, split_dir, cold_target, warm_target, args.cold_runs,
                            args.warm_runs, not args.no_baseline)
    return rows


def markdown_table(rows: List[Dict]) -> str:
    """The result rows as a markdown table."""
    headers = ["dataset", "method", "images", "instances", "runs", "median s", "median CPU s",
               "target s", "speedup vs baseline"]
    cells = []
    for row in rows:
        target = "" if row["target_s"] is None else (
            f"< {row['target_s']} ({'met' if row['meets_target'] else 'MISSED'})")
        speedup = row.get("speedup_vs_baseline")
        note = " (same RLEs)" if row.get("identical_rles") else (
            " (RLEs DIFFER)" if row.get("identical_rles") is False else "")
        cells.append([row["dataset"], row["method"] + note, row["images"], row["instances"],
                      row["runs"], f"{row['median_s']:.4f}", f"{row['median_cpu_s']:.4f}",
                      target, "" if speedup is None else f"{speedup}x"])
    return tabulate(cells, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * 7)


def main(argv: Optional[List[str]] = None) -> int:
    rows = run(argv)
    if not rows:
        print("no dataset found: nothing measured", file=sys.stderr)
        return 1
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
