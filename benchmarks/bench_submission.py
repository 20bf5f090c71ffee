"""Test set to submission: the 14 CoNSeP test images to a checked ``test-results.json``.

What users run (``tools/predict.py`` is a thin wrapper of it): ``seg_project.inference.predict``'s
``resolve_inputs(folder, mapping file)``, ``seg_project.inference.predictor.Predictor`` and
``run_prediction`` (predict every image, write ``test-results.json``, read it back and check
it the way the grader will). CoNSeP keeps each test image as ``test/<name>/image.tif``, so
the run gets a temporary flat folder of symlinks ``<name>.tif`` and a mapping file
(``[{"file_name", "id", "height", "width"}]``, ids 1..14 in name order), as in the course's
``test_release/`` layout.

The model is ours (``common.ours_config``) at the project's test settings: the input
resized to S x S (default 800, the base config's ``MIN_SIZE_TEST``), at most 1,000
detections per image (``TEST.DETECTIONS_PER_IMAGE``), score threshold 0; random init, so
every image gets its full 1,000 detections (the worst case for the file and the check).

Run: ``python benchmarks/bench_submission.py [--quick] [--device cpu] [--size 800]``.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch
from common import (
    DEFAULT_DATA,
    Stopwatch,
    add_common_args,
    ours_config,
    resolve_device,
    seed_everything,
)

from seg_project.data.image_io import read_image_size

TITLE = "Test set to submission (CoNSeP test, images folder to checked test-results.json)"


def flat_test_folder(test_dir: Path, out_dir: Path, limit: Optional[int] = None) -> Path:
    """Symlinks ``<out_dir>/images/<name>.tif`` to ``<test_dir>/<name>/image.tif`` and the
    mapping file ``<out_dir>/test_image_name_to_ids.json``; returns the mapping file.

    Raises:
        SystemExit: ``test_dir`` holds no ``<name>/image.tif``.
    """
    folders = sorted(p for p in Path(test_dir).iterdir() if (p / "image.tif").is_file())
    if not folders:
        raise SystemExit(f"{test_dir}: no <name>/image.tif test folders")
    folders = folders[:limit] if limit else folders
    images = out_dir / "images"
    images.mkdir(parents=True)
    mapping = []
    for image_id, folder in enumerate(folders, start=1):
        link = images / f"{folder.name}.tif"
        os.symlink((folder / "image.tif").resolve(), link)
        height, width = read_image_size(link)
        mapping.append({"file_name": link.name, "id": image_id, "height": height,
                        "width": width})
    mapping_file = out_dir / "test_image_name_to_ids.json"
    mapping_file.write_text(json.dumps(mapping, indent=1), encoding="utf-8")
    return mapping_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--size", type=int, default=800, help="input size S (default 800)")
    parser.add_argument("--max-dets", type=int, default=1000,
                        help="detections per image (default 1000)")
    parser.add_argument("--images", type=int, default=None,
                        help="first N test images only (default all 14; quick 2)")
    args = parser.parse_args(argv)
    if args.images is None and args.quick:
        args.images = 2
    return args


def run(argv=None, notes: Optional[List[str]] = None) -> List[Dict]:
    """Run the test-set-to-submission benchmark; returns one row."""
    from seg_project.inference.predict import resolve_inputs, run_prediction
    from seg_project.inference.predictor import Predictor

    args = parse_args(argv)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-submission-") as tmp:
        tmp = Path(tmp)
        mapping_file = flat_test_folder(args.data / "test", tmp, args.images)
        with Stopwatch(device) as total:
            with Stopwatch() as setup:
                job = resolve_inputs([tmp / "images"], mapping_file)
                predictor = Predictor(ours_config(args.size, device, max_dets=args.max_dets),
                                      weights="")
            with Stopwatch(device) as predict:
                job = run_prediction(predictor, job, tmp / "out")
        size_mb = (tmp / "out" / "test-results.json").stat().st_size / 2**20
        entries = len(json.loads((tmp / "out" / "test-results.json").read_text()))
    count = len(job.images)
    shown = args.data / "test" if args.data != DEFAULT_DATA else "../shared/data/consep/test"
    lines = [f"{count} CoNSeP test images ({shown}, 1000x1000) resized to "
             f"{args.size}x{args.size}; the written file passed the project's check "
             f"(``check_submission``: no errors).",
             "The check's report: " + "; ".join(
                 [job.report.splitlines()[0].rsplit(": ", 1)[-1]]
                 + job.report.splitlines()[1:3])]
    print("\n".join(lines), file=sys.stderr)
    if notes is not None:
        notes.extend(lines)
    return [{
        "images": count,
        "size": f"{args.size}x{args.size}",
        "max dets": args.max_dets,
        "total s": total.wall,
        "inputs + model build s": setup.wall,
        "predict + write + check s": predict.wall,
        "s/image": predict.wall / count,
        "images/s": count / predict.wall,
        "entries": entries,
        "test-results.json MiB": size_mb,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
    }]


def main(argv=None) -> List[Dict]:
    """Run and print the table."""
    from common import run_and_print

    return run_and_print(run, TITLE, argv)


if __name__ == "__main__":
    main()
