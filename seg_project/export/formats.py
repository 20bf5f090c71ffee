"""The output formats of ``tools/predict.py`` (``--format``) and where each writes.

- ``coco``: ``<out>/test-results.json`` (the grader's submission; written by
  :mod:`seg_project.submission`, not here);
- ``geojson``: ``<out>/geojson/<image>.geojson``, one QuPath FeatureCollection per image
  (:mod:`.geojson`), of QuPath detections or (``object_type="annotation"``) annotations;
- ``label-tiff``: ``<out>/labels/<image>_instances.tif`` and ``_classes.tif`` per image, and
  ``<image>_labels.json`` naming their numbers (classes, colors, each instance's class and
  score; :mod:`.label_tiff`);
- ``course``: ``<out>/course/<image>/image.tif`` + ``classN.tif``, a dataset in the course
  layout that the reader can load again (to correct predictions by hand).

``<image>`` is the image file's name without its extension.

The per-image formats hold the image's cells (:func:`write_exports`): the detections scoring
at least a threshold (the run's operating point, by default, in ``tools/predict.py`` and
``tools/export.py``), painted into one instance map under the overlap rule, so that each
nucleus is one object; the submission keeps every detection.
"""

from pathlib import Path
from typing import Dict, List, Sequence

from ..data.instance_map import NO_RULE, OverlapRule
from ..utils.errors import DatasetError
from ..utils.paths import check_output_file

__all__ = ["EXPORT_FORMATS", "FORMATS", "check_export_targets", "stale_exports",
           "write_exports"]

FORMATS = ("coco", "geojson", "label-tiff", "course")
# The formats written per image by this module (coco is the one submission file).
EXPORT_FORMATS = FORMATS[1:]
_FOLDERS = {"geojson": "geojson", "label-tiff": "labels", "course": "course"}


def _targets(fmt: str, out_dir: Path, name: str) -> List[Path]:
    from .geojson import geojson_path
    from .label_tiff import course_layout_folder, label_sidecar_path, label_tiff_paths

    folder = out_dir / _FOLDERS[fmt]
    if fmt == "geojson":
        return [geojson_path(folder, name)]
    if fmt == "label-tiff":
        return [*label_tiff_paths(folder, name), label_sidecar_path(folder, name)]
    return [course_layout_folder(folder, name) / "image.tif"]


def check_export_targets(formats: Sequence[str], out_dir, image_paths: Sequence,
                         overwrite: bool = False) -> None:
    """Check, before any inference, that every per-image file of ``formats`` can be written.

    Raises:
        DatasetError: two images with one name, a target that exists without ``overwrite``
            (a course-layout folder counts: it may hold corrections made by hand), or one
            that cannot be created.
    """
    formats = [f for f in formats if f in EXPORT_FORMATS]
    if not formats:
        return
    names: Dict[str, Path] = {}
    for path in map(Path, image_paths):
        if path.stem in names:
            raise DatasetError(path, f"has the same name as {names[path.stem]}: their exported "
                                     "files would collide")
        names[path.stem] = path
    out_dir = Path(out_dir)
    for fmt in formats:
        for name in names:
            for target in _targets(fmt, out_dir, name):
                if fmt == "course" and target.parent.exists() and not overwrite:
                    raise DatasetError(target.parent, "the course-layout folder exists (it may "
                                                      "hold corrections); pass --overwrite to "
                                                      "replace it")
                check_output_file(target, overwrite, what=f"{fmt} file")


def write_exports(formats: Sequence[str], out_dir, image_path, entries: Sequence[Dict],
                  height: int, width: int, class_names: Sequence[str],
                  colors: Sequence[Sequence[int]], object_type: str = "detection",
                  score_threshold: float = 0.0, rule: OverlapRule = NO_RULE) -> List[Path]:
    """Write one image's cells in every per-image format of ``formats``: its entries scoring
    at least ``score_threshold``, painted into one instance map under ``rule``.

    Args:
        formats: any of :data:`FORMATS` (``coco`` is skipped here).
        out_dir: the output folder (``--out``).
        image_path: the image file (its name names the outputs; ``course`` copies it).
        entries: the image's result entries (category ids 1..K), as predicted.
        height, width: the image's size.
        class_names: the K class names.
        colors: one RGB color per class.
        object_type: the QuPath object type of the GeoJSON features, ``"detection"`` or
            ``"annotation"``.
        score_threshold: entries scoring below it are no cells (the tools pass the run's
            operating point, :mod:`seg_project.data.score_threshold`).
        rule: the overlap rule of the instance map.

    Returns:
        list[Path]: the files written.

    Raises:
        DatasetError: an entry without a finite score, or invalid otherwise.
    """
    from .geojson import entry_score, geojson_path, write_geojson
    from .label_tiff import write_course_layout, write_label_tiffs

    out_dir, name = Path(out_dir), Path(image_path).stem
    cells = [e for i, e in enumerate(entries) if entry_score(e, i, name) >= score_threshold]
    written: List[Path] = []
    if "geojson" in formats:
        written.append(write_geojson(geojson_path(out_dir / _FOLDERS["geojson"], name),
                                     cells, class_names, colors, image_name=name,
                                     object_type=object_type, rule=rule))
    if "label-tiff" in formats:
        written += write_label_tiffs(out_dir / _FOLDERS["label-tiff"], name, cells, height,
                                     width, class_names, colors, rule=rule)
    if "course" in formats:
        written += write_course_layout(out_dir / _FOLDERS["course"], name, cells, height,
                                       width, image_path=image_path, rule=rule)
    return written


def stale_exports(formats: Sequence[str], out_dir, staged_dir) -> List[Path]:
    """The files of ``out_dir`` that outputs staged in ``staged_dir`` make stale, to delete
    when they are moved into place: the ``classN.tif`` masks of a course-layout folder that
    the new prediction of its image does not have.

    Args:
        formats: the output formats.
        out_dir: the output folder (``--out``).
        staged_dir: a folder holding the new outputs laid out as in ``out_dir``.
    """
    from .label_tiff import stale_class_files

    staged_course = Path(staged_dir) / _FOLDERS["course"]
    if "course" not in formats or not staged_course.is_dir():
        return []
    stale: List[Path] = []
    for staged in sorted(staged_course.iterdir()):
        kept = [path.name for path in staged.iterdir()]
        stale += stale_class_files(Path(out_dir) / _FOLDERS["course"] / staged.name, kept)
    return stale
