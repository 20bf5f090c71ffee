"""The one reader of the course layout: folders of TIFFs -> Detectron2 dataset dicts.

Annotated folders (``train/<name>/``) hold ``image.tif`` and one ``classN.tif`` per class
present; every distinct non-zero value of a class file is one instance of class N (ids may
repeat across class files: an instance is a (class, id) pair). Test folders hold images named
in ``test_image_name_to_ids.json``.

Conversion works per instance on its bounding box (``scipy.ndimage.find_objects``) and encodes
masks with :mod:`seg_project.data.rle`; converted records are cached (see
:mod:`seg_project.data.cache`), validated by a digest of the source files' names and bytes.
"""

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .cache import ConversionCache, content_digest
from .image_io import IMAGE_EXTENSIONS, DatasetError, read_image, read_image_size, read_mask
from .rle import encode_crops

__all__ = [
    "CLASS_FILE_RE",
    "IMAGE_FILE",
    "stable_image_id",
    "read_annotated_folder",
    "load_annotated_split",
    "folder_relative_name",
    "load_mapping",
    "read_json",
    "load_test_images",
    "summarize",
]

logger = logging.getLogger(__name__)

# The course layout: ROOT/train/<name>/image.tif + classN.tif, ROOT/test_release/<uuid>.tif and
# ROOT/test_image_name_to_ids.json.
TRAIN_DIR = "train"
TEST_DIR = "test_release"
MAPPING_FILE = "test_image_name_to_ids.json"
IMAGE_FILE = "image.tif"
CLASS_FILE_RE = re.compile(r"^class(\d+)\.tif$")
# Bumped whenever the records this module produces change, so old caches are not reused.
READER_VERSION = 2
# detectron2.structures.BoxMode.XYWH_ABS, an IntEnum: Detectron2 reads the plain int wherever it
# reads "bbox_mode" (its own evaluators write ints), and records then load (from the cache
# too) without importing Detectron2.
BBOX_MODE_XYWH_ABS = 1
# Above this many ids per pixel, find_objects' per-id table would be wasteful: relabel first.
_SPARSE_ID_FACTOR = 4


def stable_image_id(name: str) -> int:
    """A positive int32 derived from an image's folder name (stable across runs and splits)."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) % (2**31 - 1) + 1


def _class_files(folder: Path, num_classes: int) -> Dict[int, Path]:
    """Map class number N -> ``classN.tif`` path, checking every other TIFF's name."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name == IMAGE_FILE or path.suffix.lower() not in (".tif", ".tiff"):
            continue  # non-TIFF side files (notes, thumbnails) are not ours to judge
        match = CLASS_FILE_RE.match(path.name)
        if not match:
            raise DatasetError(path, f"unexpected TIFF name: mask files must be named classN.tif "
                                     f"with N in 1..{num_classes}")
        number = int(match.group(1))
        if not 1 <= number <= num_classes:
            raise DatasetError(path, f"class number {number} is outside 1..{num_classes}")
        if number in found:
            raise DatasetError(path, f"class {number} has two mask files: "
                                     f"{found[number].name} and {path.name}")
        found[number] = path
    return found


def _source_files(folder: Path) -> List[Path]:
    """The files a folder's record is made from: its TIFFs, sorted by name."""
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in (".tif", ".tiff") and path.is_file())


def _instances_of_mask(mask: np.ndarray):
    """Yield ``(crop, x0, y0)`` for every instance id of ``mask``, in increasing id order."""
    from scipy import ndimage  # imported when masks are converted: tools that read only the
    # mapping file (check_submission) start without scipy

    top = int(mask.max()) if mask.size else 0
    if top == 0:
        return
    labels = mask
    if top > _SPARSE_ID_FACTOR * mask.size:
        # Sparse, huge ids: relabel to 1..n (0 stays background, order stays increasing).
        ids, inverse = np.unique(mask, return_inverse=True)
        labels = (inverse.reshape(mask.shape) + (0 if ids[0] == 0 else 1)).astype(np.int32)
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        crop = labels[box] == index + 1
        yield crop, box[1].start, box[0].start


def read_annotated_folder(folder, num_classes: int, image_id: Optional[int] = None) -> Dict:
    """Convert one annotated folder to a Detectron2 dataset dict.

    Args:
        folder: the folder holding ``image.tif`` and ``classN.tif`` files.
        num_classes: K; class files must be numbered 1..K.
        image_id: the dict's ``image_id``; default :func:`stable_image_id` of the folder name.

    Returns:
        dict: ``file_name``, ``image_id``, ``height``, ``width``, ``annotations`` (each with a
        compressed RLE ``segmentation`` whose counts are ``str``, a tight ``bbox`` in
        ``BoxMode.XYWH_ABS``, ``category_id`` N-1, ``area`` and ``iscrowd`` 0).

    Raises:
        DatasetError: naming the file and the problem (missing or corrupt image, badly named
            or numbered class file, mask of the wrong size or with invalid values).
    """
    folder = Path(folder)
    image_path = folder / IMAGE_FILE
    if not image_path.is_file():
        raise DatasetError(image_path, "missing: every annotated folder needs an image.tif")
    height, width = read_image(image_path).shape[:2]  # decodes it all: corrupt data fails here
    annotations = []
    for number, mask_path in _class_files(folder, num_classes).items():
        mask = read_mask(mask_path)
        if mask.shape != (height, width):
            raise DatasetError(mask_path, f"mask is {mask.shape[0]}x{mask.shape[1]} but "
                                          f"{IMAGE_FILE} is {height}x{width}")
        crops = list(_instances_of_mask(mask))
        for (crop, x0, y0), rle in zip(crops, encode_crops(crops, height, width)):
            h, w = crop.shape
            annotations.append({
                "bbox": [int(x0), int(y0), int(w), int(h)],
                "bbox_mode": BBOX_MODE_XYWH_ABS,
                "category_id": number - 1,
                "segmentation": rle,
                "area": int(crop.sum()),
                "iscrowd": 0,
            })
    return {
        "file_name": str(image_path),
        "image_id": stable_image_id(folder.name) if image_id is None else image_id,
        "height": int(height),
        "width": int(width),
        "annotations": annotations,
    }


def _annotated_folders(split_dir: Path, names: Optional[Sequence[str]]) -> List[Path]:
    if not split_dir.is_dir():
        raise DatasetError(split_dir, "dataset folder not found")
    present = {p.name: p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if names is None:
        chosen = [present[n] for n in sorted(present)]
    else:
        missing = [n for n in names if n not in present]
        if missing:
            raise DatasetError(split_dir, f"the split names folders that do not exist: "
                                          f"{', '.join(missing[:10])}")
        chosen = [present[n] for n in names]
    if not chosen and names is not None:
        raise DatasetError(split_dir, f"empty split: no folder names were chosen from its "
                                      f"{len(present)} folder(s) (an empty validation list, or a "
                                      "validation fraction too small to select any?)")
    if not chosen:
        raise DatasetError(split_dir, "empty split: it has no image folders (<name>/image.tif)")
    return chosen


def load_annotated_split(
    split_dir,
    num_classes: int,
    names: Optional[Sequence[str]] = None,
    cache_dir=None,
    progress: bool = False,
) -> List[Dict]:
    """Load a folder of annotated image folders (e.g. ``<root>/train``) as dataset dicts.

    Args:
        split_dir: the folder of ``<name>/`` subfolders.
        num_classes: K, the number of classes.
        names: the subfolder names to load (in this order); default: all, sorted.
        cache_dir: where converted records are cached (default: ``$SEG_PROJECT_CACHE`` or
            ``~/.cache/seg_project``); ``False`` disables the cache.
        progress: show a tqdm progress bar (on stderr) over the folders.

    Returns:
        list[dict]: one dict per folder, see :func:`read_annotated_folder`.

    Raises:
        DatasetError: a missing or empty split, or any bad file inside it.
    """
    split_dir = Path(split_dir).resolve()
    folders = _annotated_folders(split_dir, names)
    cache = ConversionCache.for_source(split_dir, cache_dir, version=(READER_VERSION, num_classes))
    records = []
    for folder in tqdm(folders, desc=f"Reading {split_dir.name}", unit="image",
                       disable=not progress):
        digest = content_digest(_source_files(folder))
        record = cache.get(folder.name, digest)
        if record is None:
            record = read_annotated_folder(folder, num_classes)
            cache.put(folder.name, digest, record)
        records.append(record)
    cache.save()
    ids = {}
    for record in records:
        other = ids.setdefault(record["image_id"], record["file_name"])
        if other != record["file_name"]:
            raise DatasetError(record["file_name"], f"image_id {record['image_id']} collides "
                                                    f"with {other}; rename one folder")
    return records


def read_json(path, what: str = "file"):
    """Parse a JSON file.

    Raises:
        DatasetError: ``what`` not found, or not valid JSON (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, f"{what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"not valid JSON: {e}") from e


def folder_relative_name(file_name: str) -> Optional[str]:
    """A mapping file's ``file_name`` as a path inside the image folder, or None if it leaves it.

    ``.`` and ``..`` are collapsed (``./a.tif`` and ``sub/../a.tif`` are ``a.tif``); an absolute
    name, or one that climbs above the folder (``../outside.tif``), gives None. Only the name
    is judged: a symlink that the folder holds is followed when the file is read.
    """
    name = os.path.normpath(file_name)
    if os.path.isabs(name) or name == os.pardir or name.startswith(os.pardir + os.sep):
        return None
    return name


def load_mapping(mapping_path) -> List[Dict]:
    """Read and check ``test_image_name_to_ids.json``.

    Returns:
        list[dict]: the entries, each with ``file_name`` (str, a path inside the image folder:
        see :func:`folder_relative_name`), ``id`` (int >= 0), ``height`` and ``width``
        (positive ints).

    Raises:
        DatasetError: unreadable JSON, wrong structure, a repeated id, a file name that leaves
            the image folder, or two entries naming one file (e.g. ``./a.tif`` and ``a.tif``).
    """
    mapping_path = Path(mapping_path)
    entries = read_json(mapping_path, "mapping file")
    if not isinstance(entries, list) or not entries:
        raise DatasetError(mapping_path, "must be a non-empty JSON list of "
                                         '{"file_name", "id", "height", "width"} objects')
    seen_ids, seen_names = {}, {}
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        if not isinstance(entry, dict) or not {"file_name", "id", "height", "width"} <= set(entry):
            raise DatasetError(mapping_path, f"{where} needs file_name, id, height and width: "
                                             f"{entry!r}")
        if not isinstance(entry["file_name"], str) or not entry["file_name"]:
            raise DatasetError(mapping_path, f"{where}: file_name must be a non-empty string")
        for key in ("id", "height", "width"):
            value = entry[key]
            lowest = 0 if key == "id" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise DatasetError(mapping_path, f"{where} ({entry['file_name']}): {key} must "
                                                 f"be an integer >= {lowest}, got {value!r}")
        file_name, image_id = entry["file_name"], entry["id"]
        name = folder_relative_name(file_name)
        if name is None:
            raise DatasetError(mapping_path, f"{where} (id {image_id}): file_name {file_name!r} "
                                             "leaves the image folder (names are relative to "
                                             "it: no absolute path, no '..' above it)")
        if image_id in seen_ids:
            raise DatasetError(mapping_path, f"id {image_id} is repeated ({file_name} and "
                                             f"{seen_ids[image_id]})")
        if name in seen_names:
            other_id, other_name = seen_names[name]
            if other_name == file_name:
                raise DatasetError(mapping_path, f"file name {file_name} is repeated (ids "
                                                 f"{other_id} and {image_id})")
            raise DatasetError(mapping_path, f"ids {other_id} and {image_id} name one file, "
                                             f"{name} ({other_name!r} and {file_name!r})")
        seen_ids[image_id] = file_name
        seen_names[name] = (image_id, file_name)
    return entries


def _image_files(image_dir: Path) -> List[Path]:
    return sorted(p for p in image_dir.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def load_test_images(image_dir, mapping_file=None) -> List[Dict]:
    """Dataset dicts (no annotations) for a folder of test images.

    With a mapping file, ``image_id`` is each entry's ``id``; every entry's file must exist with
    the listed size, and every image of the folder must be listed. Without one, the folder's
    images get ids 1..n in sorted name order (each dict then says ``"id_source": "sorted"``).

    Raises:
        DatasetError: a missing folder, no images, or any disagreement with the mapping file.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(image_dir, "test image folder not found")
    files = _image_files(image_dir)
    if mapping_file is None:
        if not files:
            raise DatasetError(image_dir, "empty split: no image files "
                                          f"({', '.join(IMAGE_EXTENSIONS)})")
        records = []
        for index, path in enumerate(files, start=1):
            height, width = read_image_size(path)
            records.append({"file_name": str(path), "image_id": index, "height": height,
                            "width": width, "id_source": "sorted"})
        return records
    mapping_file = Path(mapping_file)
    entries = load_mapping(mapping_file)
    listed = {folder_relative_name(entry["file_name"]) for entry in entries}
    unlisted = [p for p in files if p.name not in listed]
    if unlisted:
        raise DatasetError(mapping_file, f"misses {len(unlisted)} image(s) of {image_dir}: "
                                         f"{', '.join(p.name for p in unlisted[:10])}")
    records = []
    for entry in entries:
        path = image_dir / folder_relative_name(entry["file_name"])
        if not path.is_file():
            raise DatasetError(path, f"listed in {mapping_file.name} (id {entry['id']}) but "
                                     "the file is missing")
        height, width = read_image_size(path)
        if (height, width) != (entry["height"], entry["width"]):
            raise DatasetError(path, f"is {height}x{width} but {mapping_file.name} says "
                                     f"{entry['height']}x{entry['width']} (id {entry['id']})")
        records.append({"file_name": str(path), "image_id": entry["id"], "height": height,
                        "width": width})
    return records


def _area_stats(areas: Sequence[int]) -> Optional[Dict]:
    if not areas:
        return None
    return {"min": int(min(areas)), "median": float(np.median(areas)), "max": int(max(areas))}


def summarize(records: Sequence[Dict], class_names: Sequence[str]) -> Dict:
    """Statistics of annotated records.

    Returns:
        dict: ``images``, ``instances``, ``instances_per_class`` (class name -> count),
        ``instances_per_image`` and ``instance_area_per_class`` (class name -> min / median /
        max pixels, None for a class without instances), ``image_size`` (min / max height and
        width) and ``empty_images`` (folder names of images without any instance: valid
        negatives, kept in the dataset).
    """
    areas = {name: [] for name in class_names}
    per_image = []
    empty = []
    for record in records:
        annotations = record.get("annotations", [])
        per_image.append(len(annotations))
        if not annotations:
            empty.append(Path(record["file_name"]).parent.name)
        for ann in annotations:
            areas[class_names[ann["category_id"]]].append(ann["area"])
    heights = [r["height"] for r in records]
    widths = [r["width"] for r in records]
    return {
        "images": len(records),
        "instances": int(sum(per_image)),
        "instances_per_class": {name: len(values) for name, values in areas.items()},
        "instances_per_image": {
            "min": int(min(per_image)) if per_image else 0,
            "median": float(np.median(per_image)) if per_image else 0.0,
            "max": int(max(per_image)) if per_image else 0,
        },
        "instance_area_per_class": {name: _area_stats(values) for name, values in areas.items()},
        "image_size": {
            "height": {"min": min(heights, default=0), "max": max(heights, default=0)},
            "width": {"min": min(widths, default=0), "max": max(widths, default=0)},
        },
        "empty_images": empty,
    }
