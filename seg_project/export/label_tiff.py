"""Predictions of one image as label TIFFs, and as a course-layout folder.

Label maps (:func:`paint_label_maps`, :func:`write_label_tiffs`):

- ``<out>/<name>_instances.tif``: instance ids, 0 = background, 1..n = the instances.
- ``<out>/<name>_classes.tif``: class ids, 0 = background, N = ``category_id`` N (1..K).
- Non-overlapping: the entries' instance map
  (:func:`seg_project.data.instance_map.paint_instance_map`): painted in descending score
  order (ties: the later entry first), each only on pixels no higher-scored entry holds, so
  the higher score wins a contested pixel; an entry covered entirely (or with an empty mask)
  gets no id, nor does one the overlap rule drops (``rule``: fewer than a fraction of its
  pixels left visible, or a mask IoU above a limit with a higher-scored kept one). Instance
  ids are given in that order, 1 = the highest score, so the ids are exactly 1..n.
- dtypes: instances ``uint16`` (``uint32`` above 65535 instances), classes ``uint8``
  (``uint16`` above 255 classes); single-page grayscale TIFFs written with ``tifffile``, zlib
  compression, so any viewer (Fiji, napari, QuPath) opens them.
- ``<out>/<name>_labels.json`` (when the class names are given, as ``tools/predict.py`` does):
  what the numbers mean, since a TIFF of ids carries no names::

      {"image": "<name>", "instances_file": "<name>_instances.tif",
       "classes_file": "<name>_classes.tif", "background": 0,
       "classes": [{"id": 1, "name": "other", "color": [255, 200, 0]}, ...],
       "instances": [{"id": 1, "class_id": 3, "score": 0.97}, ...]}

  ``classes`` lists every class 1..K (present or not) with its RGB color (the colors of the
  pictures and of the GeoJSON); ``instances`` lists the instance ids 1..n of the instance
  TIFF with their class and score.

Course layout (:func:`write_course_layout`), the layout :mod:`seg_project.data.reader` reads:

- ``<out>/<name>/classN.tif``: one instance-id mask per class present, ids 1..n per class (in
  the descending score order of the label maps), ``uint16`` (``uint32`` above 65535), zlib.
  They come from the same non-overlapping label maps: no pixel belongs to two instances, of
  the same class or not.
- ``<out>/<name>/image.tif``: only when a source image is given: a TIFF source is copied byte
  for byte, another format (PNG, JPEG...) is re-written as a TIFF of its stored values. The
  reader needs it: a folder without ``image.tif`` is not re-readable as a dataset until the
  image is put there.
- The folder then holds exactly this prediction: ``classN.tif`` files of classes no longer
  present are removed; an existing ``image.tif`` is kept when no source image is given.

Every file is written atomically (:mod:`seg_project.utils.atomic_files`); the files of one
call are renamed into place only once all of them are written.
"""

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.instance_map import NO_RULE, InstanceMap, OverlapRule, paint_instance_map
from ..data.reader import CLASS_FILE_RE, IMAGE_FILE
from ..utils.atomic_files import atomic_write_many, prepare_out_dir
from ..utils.errors import DatasetError
from .geojson import check_image_name, checked_colors, entry_category, entry_crops, entry_score

__all__ = [
    "CLASSES_SUFFIX",
    "INSTANCES_SUFFIX",
    "LABELS_SUFFIX",
    "class_instance_masks",
    "course_layout_folder",
    "label_dtype",
    "label_sidecar",
    "label_sidecar_path",
    "label_tiff_paths",
    "paint_label_maps",
    "stale_class_files",
    "write_course_layout",
    "write_label_tiffs",
]

INSTANCES_SUFFIX = "_instances.tif"
CLASSES_SUFFIX = "_classes.tif"
LABELS_SUFFIX = "_labels.json"
_TIFF_SUFFIXES = (".tif", ".tiff")


def label_dtype(top: int, small=np.uint16) -> np.dtype:
    """The unsigned dtype of a label image whose largest label is ``top``: ``small`` (uint16
    by default; uint8 for class maps) when it fits, else ``uint16`` / ``uint32``."""
    for dtype in (small, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{top} labels do not fit 32 bits")


def _paint(entries: Sequence[Dict], height: int, width: int, where: str,
           rule: OverlapRule) -> InstanceMap:
    """The entries' instance map (:func:`seg_project.data.instance_map.paint_instance_map`),
    the class map holding their ``category_id``."""
    height, width = int(height), int(width)
    crops = entry_crops(entries, where, size=(height, width))
    top_class = np.iinfo(np.int32).max  # the reader checks class files against its K
    categories = [entry_category(e, i, top_class, where) for i, e in enumerate(entries)]
    scores = [entry_score(e, i, where) for i, e in enumerate(entries)]
    return paint_instance_map(crops, height, width, scores=scores, classes=categories,
                              rule=rule)


def _label_maps(entries: Sequence[Dict], height: int, width: int, where: str,
                rule: OverlapRule) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_paint` with the maps cast to their file dtypes: ``(instances, classes,
    order)``."""
    painted = _paint(entries, height, width, where, rule)
    return (painted.instances.astype(label_dtype(painted.order.size)),
            painted.classes.astype(label_dtype(int(painted.classes.max(initial=0)),
                                               small=np.uint8)), painted.order)


def paint_label_maps(entries: Sequence[Dict], height: int, width: int,
                     return_order: bool = False, rule: OverlapRule = NO_RULE):
    """Paint one image's predictions into an instance-id map and a class-id map.

    See the module docstring for the conventions (higher score wins; ids 1..n in descending
    score order; dtypes).

    Args:
        entries: the image's COCO result entries (``category_id`` 1..K, ``score``, compressed
            RLE ``segmentation`` of size ``[height, width]``), used as given.
        height: image height.
        width: image width.
        return_order: also return which entry each instance id is.
        rule: the overlap rule (default: none, the higher score wins contested pixels).

    Returns:
        tuple: ``(instance_map, class_map)``, ``(height, width)`` arrays (``uint16`` /
        ``uint32`` and ``uint8`` / ``uint16``), all zero for no entries; with ``return_order``
        a third item, the ``int64`` array whose element ``k - 1`` is the index (in
        ``entries``) of the entry painted as instance ``k``.

    Raises:
        DatasetError: an entry with an invalid or wrongly sized segmentation, a category that
            is not a positive integer, or a score that is not a finite number.
    """
    instance_map, class_map, order = _label_maps(entries, height, width, "predictions", rule)
    if return_order:
        return instance_map, class_map, order
    return instance_map, class_map


def class_instance_masks(instance_map: np.ndarray, class_map: np.ndarray) -> Dict[int, np.ndarray]:
    """Split painted label maps into one instance-id mask per class present.

    Args:
        instance_map: instance ids (0 = background), as from :func:`paint_label_maps`.
        class_map: class ids of the same pixels (each instance has one class).

    Returns:
        dict: class id N -> ``(H, W)`` mask with the class's instances numbered 1..n in the
        order of their ids in ``instance_map`` (``uint16``, ``uint32`` above 65535), for
        every class present, in increasing N.
    """
    instance_map = np.asarray(instance_map)
    class_map = np.asarray(class_map)
    top = int(instance_map.max(initial=0))
    class_of = np.zeros(top + 1, np.int64)
    class_of[instance_map.reshape(-1)] = class_map.reshape(-1)
    class_of[0] = 0
    masks = {}
    for number in np.unique(class_of[1:][class_of[1:] > 0]).tolist():
        ids = np.flatnonzero(class_of == number)
        lookup = np.zeros(top + 1, label_dtype(ids.size))
        lookup[ids] = np.arange(1, ids.size + 1)
        masks[int(number)] = lookup[instance_map]
    return masks


def _tiff_writer(array: np.ndarray):
    def write(temp: str) -> None:
        import tifffile

        tifffile.imwrite(temp, array, photometric="minisblack", compression="zlib")

    return write


def label_tiff_paths(out_dir, image_name: str) -> Tuple[Path, Path]:
    """``(<out_dir>/<image_name>_instances.tif, <out_dir>/<image_name>_classes.tif)``, the
    files :func:`write_label_tiffs` writes (for checking outputs before inference).

    Raises:
        ValueError: an image name that cannot name a file.
    """
    check_image_name(image_name)
    out_dir = Path(out_dir)
    return out_dir / f"{image_name}{INSTANCES_SUFFIX}", out_dir / f"{image_name}{CLASSES_SUFFIX}"


def label_sidecar_path(out_dir, image_name: str) -> Path:
    """``<out_dir>/<image_name>_labels.json``, the sidecar :func:`write_label_tiffs` writes
    with class names.

    Raises:
        ValueError: an image name that cannot name a file.
    """
    return Path(out_dir) / f"{check_image_name(image_name)}{LABELS_SUFFIX}"


def label_sidecar(image_name: str, entries: Sequence[Dict], order, class_names: Sequence[str],
                  colors=None) -> Dict:
    """What the label TIFFs' numbers mean (see the module docstring).

    Args:
        image_name: the image's name.
        entries: the image's result entries.
        order: which entry each instance id is (``paint_label_maps(..., return_order=True)``).
        class_names: the K class names; class id N is ``class_names[N - 1]``.
        colors: K ``[r, g, b]`` class colors; default
            :func:`seg_project.data.catalog.distinct_colors`.

    Returns:
        dict: JSON-ready.

    Raises:
        DatasetError: an entry whose class is not one of the K.
        ValueError: fewer colors than classes, or a bad color.
    """
    colors = checked_colors(colors, len(class_names))
    instances = []
    for instance_id, index in enumerate(np.asarray(order).tolist(), start=1):
        entry = entries[index]
        instances.append({"id": instance_id,
                          "class_id": entry_category(entry, index, len(class_names), image_name),
                          "score": entry_score(entry, index, image_name)})
    return {
        "image": image_name,
        "instances_file": f"{image_name}{INSTANCES_SUFFIX}",
        "classes_file": f"{image_name}{CLASSES_SUFFIX}",
        "background": 0,
        "classes": [{"id": number, "name": str(name), "color": color}
                    for number, (name, color) in enumerate(zip(class_names, colors), start=1)],
        "instances": instances,
    }


def write_label_tiffs(out_dir, image_name: str, entries: Sequence[Dict], height: int,
                      width: int, class_names: Optional[Sequence[str]] = None,
                      colors=None, rule: OverlapRule = NO_RULE) -> List[Path]:
    """Write one image's instance-id and class-id label TIFFs, atomically, and with
    ``class_names`` the ``_labels.json`` sidecar that names their numbers.

    Args:
        out_dir: the output folder (created if needed); existing files of this image are
            replaced (check beforehand with :func:`label_tiff_paths` and
            :func:`label_sidecar_path`).
        image_name: the image's name (e.g. its file's stem), without path separators.
        entries: the image's COCO result entries, see :func:`paint_label_maps`.
        height: image height.
        width: image width.
        class_names: the K class names (None: no sidecar); every entry's class must be one
            of them.
        colors: K ``[r, g, b]`` class colors for the sidecar; default
            :func:`seg_project.data.catalog.distinct_colors`.
        rule: the overlap rule (default: none).

    Returns:
        list[Path]: the instance TIFF, the class TIFF, and the sidecar when written.

    Raises:
        DatasetError: invalid entries (see :func:`paint_label_maps`), a class outside
            ``class_names``, or ``out_dir`` is a file.
        ValueError: an image name that cannot name a file; bad colors.
    """
    instances_path, classes_path = label_tiff_paths(out_dir, image_name)
    instance_map, class_map, order = _label_maps(entries, height, width, image_name, rule)
    targets = [(instances_path, _tiff_writer(instance_map)),
               (classes_path, _tiff_writer(class_map))]
    if class_names is not None:
        text = json.dumps(label_sidecar(image_name, entries, order, class_names, colors),
                          indent=1) + "\n"
        targets.append((label_sidecar_path(out_dir, image_name),
                        lambda temp: Path(temp).write_text(text, encoding="utf-8")))
    prepare_out_dir(out_dir)
    return atomic_write_many(targets)


def course_layout_folder(out_dir, image_name: str) -> Path:
    """``<out_dir>/<image_name>``, the folder :func:`write_course_layout` writes.

    Raises:
        ValueError: an image name that cannot name a folder.
    """
    return Path(out_dir) / check_image_name(image_name)


def _image_writer(image_path: Path, height: int, width: int):
    """The writer of ``image.tif`` from a source image, after checking its size."""
    from ..data.image_io import read_array, read_image_size

    size = read_image_size(image_path)
    if tuple(size) != (height, width):
        raise DatasetError(image_path, f"image is {size[0]}x{size[1]} but the predictions are "
                                       f"for {height}x{width}")
    if image_path.suffix.lower() in _TIFF_SUFFIXES:
        return lambda temp: shutil.copyfile(image_path, temp)
    array = read_array(image_path)

    def write(temp: str) -> None:
        import tifffile

        tifffile.imwrite(temp, array, compression="zlib",
                         photometric="rgb" if array.ndim == 3 and array.shape[2] in (3, 4)
                         else "minisblack")

    return write


def write_course_layout(out_dir, image_name: str, entries: Sequence[Dict], height: int,
                        width: int, image_path=None, rule: OverlapRule = NO_RULE) -> List[Path]:
    """Write one image's predictions as a course-layout folder ``<out_dir>/<image_name>/``.

    The folder holds one ``classN.tif`` instance mask per class present (see the module
    docstring), and ``image.tif`` when ``image_path`` is given; ``out_dir`` is then readable
    by :func:`seg_project.data.reader.load_annotated_split` as a split of annotated folders,
    to be corrected by hand and trained on.

    Args:
        out_dir: the folder of image folders (created if needed).
        image_name: the image's name (e.g. its file's stem): the folder's name. A name
            starting with "." makes a folder the reader skips.
        entries: the image's COCO result entries (``category_id`` 1..K), see
            :func:`paint_label_maps`.
        height: image height.
        width: image width.
        image_path: the source image, copied (TIFF) or converted (other formats) to
            ``image.tif``; None: no image is written (an existing ``image.tif`` is kept).
        rule: the overlap rule (default: none).

    Returns:
        list[Path]: the files written (``image.tif`` first when given, then ``classN.tif`` in
        increasing N); stale ``classN.tif`` files of the folder are removed.

    Raises:
        DatasetError: invalid entries, a source image that is missing, unreadable or of
            another size, or an output path that is a file.
        ValueError: an image name that cannot name a folder.
    """
    folder = course_layout_folder(out_dir, image_name)
    height, width = int(height), int(width)
    instance_map, class_map, _ = _label_maps(entries, height, width, image_name, rule)
    targets = []
    if image_path is not None:
        targets.append((folder / IMAGE_FILE, _image_writer(Path(image_path), height, width)))
    masks = class_instance_masks(instance_map, class_map)
    for number, mask in masks.items():
        targets.append((folder / f"class{number}.tif", _tiff_writer(mask)))
    prepare_out_dir(folder)
    written = atomic_write_many(targets)
    for path in stale_class_files(folder, [path.name for path in written]):
        path.unlink()
    return written


def stale_class_files(folder, kept: Sequence[str]) -> List[Path]:
    """The ``classN.tif`` files of a course-layout ``folder`` whose names are not in ``kept``
    (masks of classes that a new prediction of the image no longer has)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [path for path in sorted(folder.iterdir())
            if CLASS_FILE_RE.match(path.name) and path.name not in kept and path.is_file()]
