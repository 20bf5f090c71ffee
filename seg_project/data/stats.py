"""Statistics of a dataset in the course layout (what ``tools/dataset_stats.py`` reports), and
the intensity rule of its 16-bit and float images (:func:`compute_intensity_rule`, computed
from the training images when a run starts; see :mod:`seg_project.data.intensity`).

For each annotated split folder of a root (``<root>/train`` always, others such as
``<root>/test`` on request): images, instances per class, instances per image, per-class
instance area, image sizes and the images without any instance. The numbers come from
:func:`seg_project.data.reader.summarize` of the converted records, so they are what training
sees.

The JSON shape (``dataset_stats``)::

    {"root": "<root>", "split": "train",
     <every key of summarize() for train/: "images", "instances", "instances_per_class", ...>,
     "splits": {"train": {"folder": ..., <summarize() keys>},
                "test":  {"folder": ..., <summarize() keys>}, ...}}

i.e. the train split's figures are top-level keys, and ``splits`` holds every reported split
(train included) under its folder name.
"""

import json
import logging
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, TextIO

import numpy as np
from tabulate import tabulate

from .image_io import DatasetError, color_channels, read_array, stored_dtype
from .intensity import IntensityRule, finite_float32, fixed_mapping, rule_of_values
from .reader import load_annotated_split, summarize

__all__ = [
    "class_names_for",
    "compute_intensity_rule",
    "dataset_stats",
    "format_stats",
    "report",
    "split_stats",
]

logger = logging.getLogger(__name__)

MAIN_SPLIT = "train"
# Values sampled from each training image for the intensity rule's percentiles (all values
# when fewer).
_SAMPLES_PER_IMAGE = 250_000
# Empty images listed by name in the table (all of them are in the JSON).
_MAX_LISTED_EMPTY = 20


def class_names_for(num_classes: int) -> List[str]:
    """The names ``class1..classK`` (the course's class files are ``classN.tif``)."""
    if num_classes < 1:
        raise ValueError(f"the number of classes must be >= 1, got {num_classes}")
    return [f"class{n}" for n in range(1, num_classes + 1)]


def split_stats(split_dir, class_names: Sequence[str], cache_dir=None,
                progress: bool = False) -> Dict:
    """Statistics of one annotated split folder.

    Args:
        split_dir: the folder of ``<name>/image.tif, classN.tif`` folders.
        class_names: the K class names (class file N is ``class_names[N-1]``).
        cache_dir: conversion cache folder (None: default, False: off).
        progress: show a progress bar while converting.

    Returns:
        dict: ``folder`` plus the keys of :func:`seg_project.data.reader.summarize`.

    Raises:
        DatasetError: a missing or empty split, or any bad file in it.
    """
    records = load_annotated_split(split_dir, len(class_names), cache_dir=cache_dir,
                                   progress=progress)
    return {"folder": str(Path(split_dir).resolve()), **summarize(records, class_names)}


def dataset_stats(root, splits: Sequence[str] = (), num_classes: int = 4, cache_dir=None,
                  progress: bool = False) -> Dict:
    """Statistics of ``root/train`` and of the other split folders named in ``splits``.

    Returns:
        dict: see the module docstring (train's figures at the top level, every split under
        ``splits``).

    Raises:
        DatasetError: a missing root or split folder, or any bad file in them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "dataset root not found (expected a folder holding train/)")
    class_names = class_names_for(num_classes)
    names = [MAIN_SPLIT] + [s for s in dict.fromkeys(splits) if s != MAIN_SPLIT]
    per_split = {name: split_stats(root / name, class_names, cache_dir, progress)
                 for name in names}
    main = {key: value for key, value in per_split[MAIN_SPLIT].items() if key != "folder"}
    return {"root": str(root.resolve()), "split": MAIN_SPLIT, **main, "splits": per_split}


def compute_intensity_rule(
    paths: Iterable, samples_per_image: int = _SAMPLES_PER_IMAGE, seed: int = 0
) -> Optional[IntensityRule]:
    """The :class:`IntensityRule` of a dataset, from its training images; None if it needs none.

    A rule is needed when some non-``uint8`` image holds values that no fixed mapping covers
    (integers beyond 0..255, floats below 0 or beyond 255). Its range is then the 0.1st..99.9th
    percentile of the values of all non-``uint8`` images (up to ``samples_per_image`` values of
    each, drawn with a seeded generator, so the same files give the same rule). ``uint8`` TIFFs
    are recognised from their headers and not decoded.

    Args:
        paths: the training images.
        samples_per_image: values drawn from each wide image.
        seed: seed of the draw.

    Raises:
        DatasetError: an unreadable image.
    """
    rng = np.random.default_rng(seed)
    samples, needs_rule, wide = [], False, 0
    for path in dict.fromkeys(Path(p) for p in paths):
        dtype = stored_dtype(path)
        if dtype is not None and dtype in (np.uint8, np.bool_):
            continue
        array = color_channels(read_array(path), path)
        if array.dtype in (np.uint8, np.bool_):
            continue
        wide += 1
        needs_rule = needs_rule or fixed_mapping(array) is None
        values = finite_float32(array).reshape(-1)
        if values.size > samples_per_image:
            values = values[rng.integers(0, values.size, samples_per_image)]
        samples.append(values)
    if not needs_rule:
        return None
    rule = rule_of_values(np.concatenate(samples))
    logger.info(f"Intensity rule of the dataset ({wide} non-uint8 images): values "
                f"{rule.low:g}..{rule.high:g} (0.1..99.9th percentile) -> 0..255")
    return rule


def _range(stats: Dict) -> str:
    low, high = stats["min"], stats["max"]
    return str(low) if low == high else f"{low}..{high}"


def _split_column(summary: Dict) -> List[str]:
    """One table column: the rows of :func:`format_stats` for one split."""
    per_image = summary["instances_per_image"]
    size = summary["image_size"]
    column = [
        str(summary["images"]),
        str(summary["instances"]),
        f"{per_image['min']} / {per_image['median']:g} / {per_image['max']}",
        f"{_range(size['height'])} x {_range(size['width'])}",
        str(len(summary["empty_images"])),
    ]
    for name, count in summary["instances_per_class"].items():
        area = summary["instance_area_per_class"][name]
        column.append(f"{count}" if area is None else f"{count} ({area['median']:g} px)")
    return column


def format_stats(stats: Dict) -> str:
    """A readable table of :func:`dataset_stats` (one column per split), followed by the
    names of the images without instances."""
    splits = stats["splits"]
    first = next(iter(splits.values()))
    rows = ["images", "instances", "instances per image (min / median / max)",
            "image size (H x W, px)", "empty images (no instance)"]
    rows += [f"{name} instances (median area)" for name in first["instances_per_class"]]
    columns = [_split_column(summary) for summary in splits.values()]
    table = tabulate([[row, *cells] for row, *cells in zip(rows, *columns)],
                     headers=["", *splits], tablefmt="github", disable_numparse=True,
                     colalign=("left",) + ("right",) * len(splits))
    lines = [f"Dataset {stats['root']}", "", table]
    for name, summary in splits.items():
        empty = summary["empty_images"]
        if empty:
            listed = ", ".join(empty[:_MAX_LISTED_EMPTY])
            more = f" and {len(empty) - _MAX_LISTED_EMPTY} more" if (
                len(empty) > _MAX_LISTED_EMPTY) else ""
            lines += ["", f"{name}: images without instances: {listed}{more}"]
    return "\n".join(lines)


def report(root, splits: Sequence[str] = (), num_classes: int = 4, as_json: bool = False,
           cache_dir=None, progress: bool = True, out: Optional[TextIO] = None,
           err: Optional[TextIO] = None) -> int:
    """Print the statistics of a dataset root (a table, or JSON) and return an exit code.

    Args:
        root: the dataset root (holding ``train/``).
        splits: other split folders of ``root`` to report as well (e.g. ``["test"]``).
        num_classes: K, the number of classes.
        as_json: print JSON (see the module docstring) instead of the table.
        cache_dir: conversion cache folder (None: default, False: off).
        progress: show a progress bar (on stderr) while converting.
        out: where the report goes (default stdout).
        err: where the error message goes (default stderr).

    Returns:
        int: 0 on success; 2 on bad input, whose message (file and problem) goes to ``err``.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        stats = dataset_stats(root, splits, num_classes, cache_dir, progress)
    except DatasetError as e:
        print(f"error: {e}", file=err)
        return 2
    print(json.dumps(stats, indent=2) if as_json else format_stats(stats), file=out)
    return 0
