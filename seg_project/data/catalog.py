"""Detectron2 catalog entries for datasets in the course layout.

``register_cells`` registers one split; ``register_cells_splits`` registers the predefined
ones of a dataset root::

    <root>/train/<name>/image.tif, classN.tif     -> cells_train, cells_val (a split of train/),
                                                     cells_trainval (all of train/)
    <root>/test_release/*.tif                     -> cells_test (ids from the mapping file)
    <root>/test_image_name_to_ids.json
    <root>/<folder>/<name>/image.tif, classN.tif  -> cells_annotated_<folder> (any other
                                                     annotated folder, e.g. CoNSeP's test/)

Importing :mod:`seg_project` registers them for ``$DETECTRON2_DATASETS/cells`` (default
``datasets/cells``); ``seg_project.config.register_datasets_from_config`` re-registers them
for the root, validation fraction and seed of a config.
"""

import colorsys
import json
import os
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..utils.atomic_files import write_text
from ..utils.run_files import SPLIT_FILE
from .image_io import DatasetError
from .reader import (
    IMAGE_FILE,
    MAPPING_FILE,
    TEST_DIR,
    TRAIN_DIR,
    load_annotated_split,
    load_test_images,
)

__all__ = [
    "ANNOTATED_PREFIX",
    "DEFAULT_CLASS_NAMES",
    "annotated_dataset_name",
    "annotated_folders",
    "PREDEFINED_SPLITS",
    "default_root",
    "distinct_colors",
    "split_train_val",
    "register_cells",
    "register_cells_splits",
    "write_split_file",
]

DEFAULT_CLASS_NAMES = ("class1", "class2", "class3", "class4")
PREDEFINED_SPLITS = ("cells_train", "cells_val", "cells_trainval", "cells_test")
# Every other annotated folder F of a root registers as cells_annotated_F.
ANNOTATED_PREFIX = "cells_annotated_"
# Well-separated colors for the first classes that stand out on pink/purple H&E tissue (gold,
# green, sky blue, orange); more are spread over the hue circle.
_BASE_COLORS = [(255, 200, 0), (0, 200, 83), (0, 160, 255), (255, 110, 0)]


def default_root() -> str:
    """The dataset root used when no config names one: ``$DETECTRON2_DATASETS/cells``."""
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "cells")


def distinct_colors(count: int) -> List[List[int]]:
    """``count`` distinct RGB colors (0..255), the first four from a fixed palette."""
    colors = [list(c) for c in _BASE_COLORS[:count]]
    extra = count - len(colors)
    for i in range(extra):
        r, g, b = colorsys.hsv_to_rgb((i / extra + 0.13) % 1.0, 0.75, 0.95)
        colors.append([int(r * 255), int(g * 255), int(b * 255)])
    return colors


def _read_name_list(list_file: Path) -> List[str]:
    """Validation folder names from a text file (one per line, # comments) or from the
    ``cells_split.json`` of an earlier run (its ``val_names``)."""
    if not list_file.is_file():
        raise DatasetError(list_file, "validation list file not found")
    text = list_file.read_text(encoding="utf-8")
    if list_file.suffix.lower() == ".json":
        try:
            names = json.loads(text)["val_names"]
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(list_file, f"not a cells_split.json with val_names: {e}") from e
    else:
        names = [line.strip() for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#")]
    if len(set(names)) != len(names):
        raise DatasetError(list_file, "repeats a name")
    return names


def split_train_val(
    train_dir, val_fraction: float = 0.2, seed: int = 0, val_list: Optional[str] = None
) -> Dict[str, List[str]]:
    """Split the folder names of ``train_dir`` into train and validation, deterministically.

    Args:
        train_dir: the folder of annotated ``<name>/`` folders.
        val_fraction: share of the folders that go to validation (at least one when > 0 and
            there are two or more folders).
        seed: shuffling seed; the same names, fraction and seed give the same split.
        val_list: optional text file of validation folder names (one per line); overrides
            ``val_fraction`` and ``seed``.

    Returns:
        dict: ``{"train": [...], "val": [...]}`` (sorted names).

    Raises:
        DatasetError: a missing folder, a list naming unknown folders, or a bad fraction.
    """
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise DatasetError(train_dir, "dataset folder not found")
    names = sorted(p.name for p in train_dir.iterdir()
                   if p.is_dir() and not p.name.startswith("."))
    if val_list:
        val = _read_name_list(Path(val_list))
        unknown = sorted(set(val) - set(names))
        if unknown:
            raise DatasetError(val_list, f"names folders not in {train_dir}: "
                                         f"{', '.join(unknown[:10])}")
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise DatasetError(train_dir, f"validation fraction must be in [0, 1), got "
                                          f"{val_fraction}")
        shuffled = list(names)
        random.Random(seed).shuffle(shuffled)
        count = round(len(names) * val_fraction)
        if val_fraction > 0 and len(names) >= 2:
            count = min(max(count, 1), len(names) - 1)
        val = shuffled[:count]
    val_set = set(val)
    return {"train": [n for n in names if n not in val_set], "val": sorted(val_set)}


def register_cells(
    name: str,
    image_root,
    *,
    names: Optional[Sequence[str]] = None,
    mapping_file=None,
    annotated: bool = True,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    cache_dir=None,
    split: Optional[Dict] = None,
) -> None:
    """Register one dataset in the course layout with Detectron2's catalogs.

    Args:
        name: the dataset name, e.g. "cells_train".
        image_root: for annotated data the folder of ``<name>/`` folders; for test data the
            folder of images.
        names: annotated folder names to use (default: all); a callable returning them is
            also accepted, so a split can be computed when the data is first loaded.
        mapping_file: test data only: ``test_image_name_to_ids.json`` giving ``image_id``s.
        annotated: whether the split has masks (train/val) or only images (test).
        class_names: the K class names; class file ``classN.tif`` is class ``class_names[N-1]``.
        cache_dir: conversion cache folder (None: default, False: off).
        split: how ``names`` were chosen (stored in the metadata and the run's split file).
    """
    class_names = list(class_names)

    def load():
        if not annotated:
            return load_test_images(image_root, mapping_file)
        chosen = names() if callable(names) else names
        return load_annotated_split(image_root, len(class_names), chosen, cache_dir)

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=class_names,
        thing_colors=distinct_colors(len(class_names)),
        # The course's category ids are 1..K; the model's are 0..K-1.
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(class_names))},
        evaluator_type="coco" if annotated else "none",
        image_root=str(image_root),
        mapping_file=str(mapping_file) if mapping_file else "",
        split=dict(split or {}),
    )


def annotated_folders(root) -> List[str]:
    """Names of the folders of ``root``, other than ``train/`` and ``test_release/``, that hold
    annotated images in the course layout (``<folder>/<name>/image.tif``), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in (TRAIN_DIR, TEST_DIR) or folder.name.startswith("."):
            continue
        if any((child / IMAGE_FILE).is_file() for child in folder.iterdir() if child.is_dir()):
            found.append(folder.name)
    return found


def annotated_dataset_name(folder: str) -> str:
    """The registered name of an annotated folder of a root other than ``train/``."""
    return f"{ANNOTATED_PREFIX}{folder}"


_registered_annotated: List[str] = []


def register_cells_splits(
    root=None,
    *,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    val_fraction: float = 0.2,
    seed: int = 0,
    val_list: Optional[str] = None,
    cache_dir=None,
) -> None:
    """Register the datasets of a root: ``cells_train``, ``cells_val``, ``cells_trainval``
    and ``cells_test``, and ``cells_annotated_<folder>`` for every other annotated folder
    (e.g. ``cells_annotated_test`` for CoNSeP's ``test/``).

    Nothing is read now but the root's folder names: images are listed and split when a
    dataset is first loaded, so this is safe to call for a root that does not exist yet.
    """
    root = Path(root or default_root())
    train_dir = root / TRAIN_DIR
    split = {"root": str(root), "val_fraction": val_fraction, "seed": seed,
             "val_list": val_list or ""}

    def names_of(part):
        return lambda: split_train_val(train_dir, val_fraction, seed, val_list)[part]

    common = dict(class_names=class_names, cache_dir=cache_dir)
    register_cells("cells_train", train_dir, names=names_of("train"), split=split, **common)
    register_cells("cells_val", train_dir, names=names_of("val"), split=split, **common)
    register_cells("cells_trainval", train_dir, split=split, **common)
    mapping = root / MAPPING_FILE
    register_cells("cells_test", root / TEST_DIR, annotated=False,
                   mapping_file=mapping if mapping.exists() else None, **common)
    for name in _registered_annotated:  # those of an earlier root
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    _registered_annotated.clear()
    for folder in annotated_folders(root):
        name = annotated_dataset_name(folder)
        register_cells(name, root / folder, **common)
        _registered_annotated.append(name)


def write_split_file(output_dir, dataset_names: Sequence[str]) -> Optional[Path]:
    """Write ``cells_split.json`` (which folders each registered split uses) to
    ``output_dir`` so a run can be reproduced; returns its path, or None if no dataset
    came from a split."""
    out = {}
    for name in dataset_names:
        split = MetadataCatalog.get(name).get("split", None)
        if not split:
            continue
        parts = split_train_val(Path(split["root"]) / TRAIN_DIR, split["val_fraction"],
                                split["seed"], split["val_list"] or None)
        out["split"] = split
        out.update({f"{part}_names": names for part, names in parts.items()})
    if not out:
        return None
    return write_text(Path(output_dir) / SPLIT_FILE, json.dumps(out, indent=2) + "\n")


# The predefined datasets for $DETECTRON2_DATASETS/cells (configs re-register them for their
# own DATASETS.CELLS.ROOT); importing seg_project arranges that this module is imported as soon
# as detectron2.data is.
register_cells_splits()
