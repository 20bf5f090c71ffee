"""Where pictures come from: datasets, results JSON files, image folders; picking images.

Predictions use the project's interchange format, the COCO result entry::

    {"image_id": int, "bbox": [x, y, w, h], "score": float, "category_id": 1..K,
     "segmentation": {"size": [H, W], "counts": str}}

(``bbox`` may also be ``[x1, y1, x2, y2]``; see :func:`.instances.detect_bbox_format`).
Ground truth is a Detectron2 dataset dict.
"""

import logging
import os
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.image_io import IMAGE_EXTENSIONS, DatasetError, read_image_size
from ..data.reader import IMAGE_FILE, load_annotated_split, load_test_images, read_json

__all__ = [
    "check_result_ids",
    "class_names_for",
    "image_name",
    "image_records",
    "load_annotated_source",
    "load_results",
    "metadata_for_classes",
    "prediction_records",
    "resolve_class_names",
    "result_entry_problem",
    "select_records",
]

logger = logging.getLogger(__name__)


def class_names_for(num_classes: int) -> List[str]:
    """The default class names ``class1`` .. ``classK``."""
    return [f"class{i}" for i in range(1, num_classes + 1)]


def metadata_for_classes(class_names: Sequence[str]):
    """Detectron2 metadata (not registered anywhere) for course-layout classes: names, the
    catalog's colors, and dataset ids 1..K -> 0..K-1."""
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
    """The class names given (checked against ``num_classes``), else ``class1`` ..
    ``classK`` for ``num_classes`` (default 4) classes."""
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


def load_results(path) -> List[Dict]:
    """Read and check a COCO results JSON (a list of result entries).

    Each entry needs an int ``image_id`` and ``category_id``, a number ``score``, and a
    ``segmentation`` RLE ``{"size": [H, W], "counts": str}`` and/or a four-number ``bbox``.

    Raises:
        DatasetError: naming the file and the first bad entry.
    """
    path = Path(path)
    entries = read_json(path, "results file")
    if not isinstance(entries, list):
        raise DatasetError(path, "must be a JSON list of result entries")
    for index, entry in enumerate(entries):
        problem = result_entry_problem(entry)
        if problem:
            raise DatasetError(path, f"entry {index}: {problem}: {str(entry)[:200]}")
    return entries


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def result_entry_problem(entry, need_image_id: bool = True) -> Optional[str]:
    """What is wrong with a result entry, or None."""
    if not isinstance(entry, dict):
        return "is not an object"
    for key in ("image_id", "category_id") if need_image_id else ("category_id",):
        if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool):
            return f"{key} must be an integer"
    if not _is_number(entry.get("score")):
        return "score must be a number"
    box, segmentation = entry.get("bbox"), entry.get("segmentation")
    if box is not None and (not isinstance(box, list) or len(box) != 4
                            or not all(_is_number(v) for v in box)):
        return "bbox must be four numbers"
    if segmentation is not None and not (
        isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, list))
        and isinstance(segmentation.get("size"), list) and len(segmentation["size"]) == 2
    ):
        return 'segmentation must be {"size": [H, W], "counts": ...}'
    if box is None and segmentation is None:
        return "has neither segmentation nor bbox"
    return None


def image_name(file_name) -> str:
    """The name of an image's picture: its folder's name for ``<name>/image.tif`` (course
    layout), else the file name without extension."""
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
    """Records (no annotations) of an image folder (ids from ``id_map``, else 1..n in sorted
    file-name order) or of a list of image files (ids 1..n in the given order)."""
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
    """(records, metadata, with_ground_truth) of ``images`` or of a dataset with ground
    truth (``dataset``: a registered name, ``gt_root``: a course-layout folder)."""
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
    """Raise a :class:`DatasetError` naming ``results_file`` if an entry's ``image_id`` is
    none of the records' ids."""
    known = {r["image_id"] for r in records}
    unknown = sorted({e["image_id"] for e in entries} - known)
    if unknown:
        raise DatasetError(results_file, f"image_id(s) {', '.join(map(str, unknown[:10]))} "
                                         f"match none of the {len(records)} images (ids "
                                         f"{min(known)}..{max(known)}); wrong --id-map or "
                                         "dataset?")
