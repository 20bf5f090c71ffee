"""The per-image exports of an existing results file, without running the model:
``tools/export.py``.

A results file (``test-results.json``, a zip holding it, or ``coco_instances_results.json``)
holds every detection of its images; :func:`export_results_file` writes the cells of each
image (the detections at or above a score threshold, one per nucleus under an overlap rule)
in the formats of :mod:`.formats` (``geojson``, ``label-tiff``, ``course``), exactly as
``tools/predict.py --format`` does after predicting. The images come from the folder the
results were predicted from, their ids from the course's mapping file (or 1..n in sorted
file-name order, as ``tools/predict.py`` gives them without one).
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..data.instance_map import NO_RULE, OverlapRule
from ..data.reader import load_test_images
from ..submission.entries import load_result_entries
from ..utils.errors import DatasetError
from .formats import EXPORT_FORMATS, check_export_targets, write_exports

__all__ = ["export_results_file"]


def export_results_file(results_file, images, out_dir, formats: Sequence[str], *,
                        id_map=None, class_names: Optional[Sequence[str]] = None,
                        colors: Optional[Sequence[Sequence[int]]] = None,
                        score_threshold: float = 0.0, rule: OverlapRule = NO_RULE,
                        object_type: str = "detection", overwrite: bool = False) -> List[Path]:
    """Write the per-image exports of a results file's predictions.

    Args:
        results_file: ``test-results.json`` (or its zip), or ``coco_instances_results.json``.
        images: the folder of the images the results are of.
        out_dir: the output folder (``<out>/geojson/``, ``<out>/labels/``, ``<out>/course/``).
        formats: any of :data:`seg_project.export.formats.EXPORT_FORMATS`.
        id_map: ``test_image_name_to_ids.json`` (None: ids 1..n in sorted file-name order).
        class_names: the K class names (default: ``class1..classK``, K the highest
            ``category_id`` of the file, at least 4).
        colors: K ``[r, g, b]`` class colors (default:
            :func:`seg_project.data.catalog.distinct_colors`).
        score_threshold: detections scoring below it are no cells.
        rule: the overlap rule of the instance maps.
        object_type: the QuPath object type of the GeoJSON features.
        overwrite: replace existing files (refused otherwise, before anything is written).

    Returns:
        list[Path]: the files written.

    Raises:
        DatasetError: an unreadable results file or image folder, a mapping that disagrees
            with the folder, result ids that are none of the images', a class beyond
            ``class_names``, or outputs that exist without ``overwrite``.
        ValueError: no export format, or an unknown one.
    """
    formats = list(dict.fromkeys(formats))
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if not formats or unknown:
        raise ValueError(f"export formats must be among {', '.join(EXPORT_FORMATS)}, got "
                         f"{', '.join(formats) or 'none'}")
    entries = load_result_entries(results_file)
    records = load_test_images(images, id_map)
    ids = {record["image_id"] for record in records}
    strays = sorted({entry["image_id"] for entry in entries} - ids)
    if strays:
        raise DatasetError(results_file, f"image_id(s) {', '.join(map(str, strays[:10]))} are "
                                         f"none of the {len(ids)} images of {images} (ids from "
                                         f"{id_map or 'sorted file names'})")
    if class_names is None:
        top = max([4] + [int(entry["category_id"]) for entry in entries])
        class_names = [f"class{k}" for k in range(1, top + 1)]
    if colors is None:
        from ..data.catalog import distinct_colors

        colors = distinct_colors(len(class_names))
    check_export_targets(formats, out_dir, [r["file_name"] for r in records], overwrite)
    by_image: Dict[int, List[Dict]] = {}
    for entry in entries:
        by_image.setdefault(entry["image_id"], []).append(entry)
    written: List[Path] = []
    for record in records:
        written += write_exports(formats, out_dir, record["file_name"],
                                 by_image.get(record["image_id"], []), record["height"],
                                 record["width"], class_names, colors, object_type,
                                 score_threshold, rule)
    return written
