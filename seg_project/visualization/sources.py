"""Where pictures come from: datasets, image folders and the ids of results; picking images.

Predictions use the project's interchange format, the COCO result entry, read and checked by
:func:`seg_project.submission.entries.load_result_entries`. Ground truth is a Detectron2
dataset dict.
"""

import logging
import os
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.image_io import IMAGE_EXTENSIONS, DatasetError, read_image_size
from ..data.reader import IMAGE_FILE, load_annotated_split, load_test_images

__all__ = [
    "check_result_ids",
    "class_names_for",
    "image_name",
    "image_records",
    "load_annotated_source",
    "metadata_for_classes",
    "prediction_records",
    "resolve_class_names",
    "select_records",
]

logger = logging.getLogger(__name__)


def class_names_for(num_classes: int) -> List[str]:
    """The default class names.

    Args:
        num_classes: K.

    Returns:
        list[str]: ``class1`` .. ``classK``.
    """
    return [f"class{i}" for i in range(1, num_classes + 1)]


def metadata_for_classes(class_names: Sequence[str]):
    """Detectron2 metadata (not registered anywhere) for course-layout classes.

    Args:
        class_names: the names of classes 1..K.

    Returns:
        Metadata: names, the catalog's colors, and dataset ids 1..K -> 0..K-1.
    """
    from detectron2.data.catalog import Metadata

    from ..data.catalog import distinct_colors

    names = list(class_names)
    return Metadata(name="seg_project_visualization").set(
        thing_classes=names,
        thing_colors=distinct_colors(len(names)),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(names))},
    )


def resolve_class_names(class_names: Optional[Sequence[str]],
                        num_classes: Optional[int]) -> List[str]:
    """The class names to use.

    Args:
        class_names: names given (checked against ``num_classes``), or None.
        num_classes: K, or None (default: ``len(class_names)``, else 4).

    Returns:
        list[str]: ``class_names``, else ``class1`` .. ``classK``.

    Raises:
        ValueError: as many names as ``num_classes`` are not given.
    """
    if class_names:
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"{len(class_names)} class names given but num_classes is "
                             f"{num_classes}")
        return list(class_names)
    return class_names_for(num_classes or 4)


def load_annotated_source(
    source,
    split: str = "train",
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
) -> Tuple[List[Dict], object]:
    """Dataset dicts and metadata from a registered dataset name or a course-layout folder.

    Args:
        source: a name in Detectron2's ``DatasetCatalog`` (e.g. ``cells_val``), or a dataset
            root (``source/split`` is read), or a split folder of ``<name>/image.tif`` folders.
        split: the split folder of a root.
        class_names: names of classes 1..K (folders only; default ``class1`` .. ``classK``).
        num_classes: K (folders only; default ``len(class_names)`` or 4).

    Returns:
        (records, metadata)

    Raises:
        DatasetError: the source is neither a registered dataset nor a folder, or bad data.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if str(source) in DatasetCatalog.list():
        return DatasetCatalog.get(str(source)), MetadataCatalog.get(str(source))
    root = Path(source)
    if not root.is_dir():
        raise DatasetError(root, "is neither a registered dataset (e.g. "
                                 f"{', '.join(sorted(DatasetCatalog.list())[:4])}) nor a folder")
    split_dir = root / split
    if not split_dir.is_dir():
        if not any((p / IMAGE_FILE).is_file() for p in root.iterdir() if p.is_dir()):
            raise DatasetError(split_dir, f"not found, and {root} holds no <name>/{IMAGE_FILE} "
                                          "folders itself")
        split_dir = root
    names = resolve_class_names(class_names, num_classes)
    return load_annotated_split(split_dir, len(names)), metadata_for_classes(names)


def image_name(file_name) -> str:
    """The name of an image's picture.

    Args:
        file_name: the image file.

    Returns:
        str: its folder's name for ``<name>/image.tif`` (course layout), else the file name
        without extension.
    """
    path = Path(file_name)
    return path.parent.name if path.name == IMAGE_FILE else path.stem


def select_records(
    records: Sequence[Dict],
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
) -> List[Dict]:
    """Pick records by image name (see :func:`image_name`) and/or a deterministic sample.

    Args:
        records: dataset dicts with ``file_name``.
        sample: keep this many, chosen at random with ``seed`` (None or >= len: all).
        seed: the sample's seed; the same records, sample and seed give the same picks.
        names: keep only these images (checked to exist), before sampling.

    Returns:
        list[dict]: the picked records, in their original order.

    Raises:
        ValueError: a name that matches no image, or a sample size below 1.
    """
    chosen = list(records)
    if names:
        by_name = {image_name(r["file_name"]): r for r in chosen}
        missing = [n for n in names if n not in by_name]
        if missing:
            known = sorted(by_name)
            raise ValueError(f"no image named {', '.join(missing[:10])} (known: "
                             f"{', '.join(known[:10])}{', ...' if len(known) > 10 else ''})")
        wanted = set(names)
        chosen = [r for r in chosen if image_name(r["file_name"]) in wanted]
    if sample is not None:
        if sample < 1:
            raise ValueError(f"sample must be at least 1, got {sample}")
        if sample < len(chosen):
            picks = sorted(random.Random(seed).sample(range(len(chosen)), sample))
            chosen = [chosen[i] for i in picks]
    return chosen


def image_records(images, id_map=None) -> List[Dict]:
    """Records (no annotations) of images to draw predictions on.

    Args:
        images: an image folder (ids from ``id_map``, else 1..n in sorted file-name order),
            or image files (ids 1..n in the given order).
        id_map: ``test_image_name_to_ids.json`` (a folder only), or None.

    Returns:
        list[dict]: ``file_name``, ``image_id``, ``height`` and ``width`` per image.

    Raises:
        DatasetError: a file that is not an image, or a bad mapping file.
        ValueError: ``id_map`` with image files.
    """
    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if len(paths) == 1 and Path(paths[0]).is_dir():
        records = load_test_images(paths[0], id_map)
        if id_map is None:
            logger.warning(f"No id map: image ids are 1..{len(records)} in sorted file-name "
                           f"order of {paths[0]} ({Path(records[0]['file_name']).name} is 1); "
                           "pass --id-map test_image_name_to_ids.json if the results use its "
                           "ids")
        return records
    if id_map is not None:
        raise ValueError("--id-map needs --images to be one folder")
    records = []
    for index, image in enumerate(paths, start=1):
        path = Path(image)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(path, f"not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        height, width = read_image_size(path)
        records.append({"file_name": str(path), "image_id": index, "height": height,
                        "width": width})
    return records


def prediction_records(
    images, id_map, dataset, gt_root, split, class_names, num_classes
) -> Tuple[List[Dict], object, bool]:
    """The images to draw predictions on, from image files or from a dataset.

    Args:
        images: image folder or files (see :func:`image_records`), or None.
        id_map: the mapping file of an image folder, or None.
        dataset: a registered dataset name, or None.
        gt_root: a course-layout folder with ground truth, or None.
        split: the split folder of ``gt_root``.
        class_names: names of classes 1..K, or None.
        num_classes: K, or None.

    Returns:
        tuple: ``(records, metadata, with_ground_truth)``.

    Raises:
        ValueError: both or neither of ``images`` and a dataset.
        DatasetError: bad images or data.
    """
    if (images is None) == (dataset is None and gt_root is None):
        raise ValueError("give either images (--images) or a dataset with ground truth "
                         "(--dataset / --gt-root), not both or neither")
    if images is not None:
        metadata = metadata_for_classes(resolve_class_names(class_names, num_classes))
        return image_records(images, id_map), metadata, False
    records, metadata = load_annotated_source(dataset or gt_root, split, class_names,
                                              num_classes)
    # A dataset without masks (e.g. cells_test) still gives images and ids.
    return records, metadata, all("annotations" in r for r in records)


def check_result_ids(entries: Sequence[Dict], records: Sequence[Dict], results_file) -> None:
    """Check that every entry's ``image_id`` is one of the records' ids.

    Args:
        entries: result entries.
        records: the images' records.
        results_file: named in the error.

    Raises:
        DatasetError: naming ``results_file`` and the unknown ids.
    """
    known = {r["image_id"] for r in records}
    unknown = sorted({e["image_id"] for e in entries} - known)
    if unknown:
        raise DatasetError(results_file, f"image_id(s) {', '.join(map(str, unknown[:10]))} "
                                         f"match none of the {len(records)} images (ids "
                                         f"{min(known)}..{max(known)}); wrong --id-map or "
                                         "dataset?")
