"""From a trained model to ``test-results.json`` (and the other ``--format`` outputs, see
:mod:`seg_project.export.formats`): resolve the inputs, check them, predict, write, check.

Every input is checked before any inference (:func:`resolve_inputs`, :func:`check_images`),
and every output is written into a staging folder inside ``--out`` and moved into place only
once all are written and the submission passed its check
(:class:`seg_project.utils.atomic_files.OutputStaging`): an error or a Ctrl-C leaves ``--out``
as it was.

The submission holds every detection above ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` (AP wants
them all); the per-image exports hold the cells: the detections at or above the export
threshold (``tools/predict.py``: the run's operating point by default), painted under the
overlap rule.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from ..data.catalog import distinct_colors
from ..data.image_io import IMAGE_EXTENSIONS, DatasetError, check_image, read_image_size
from ..data.instance_map import NO_RULE, OverlapRule
from ..data.reader import load_test_images
from ..export.formats import FORMATS, check_export_targets, stale_exports, write_exports
from ..submission import (
    RESULTS_NAME,
    build_submission,
    check_submission,
    format_report,
    write_submission,
)
from ..utils.atomic_files import OutputStaging
from ..utils.paths import check_output_file
from .capacity import count_capped, log_capped

__all__ = ["PredictionJob", "check_images", "check_outputs", "count_capped", "resolve_inputs",
           "run_prediction"]

logger = logging.getLogger(__name__)


@dataclass
class PredictionJob:
    """What a prediction run reads and writes.

    Attributes:
        images: (image_id, path, height, width) per image, in prediction order.
        id_source: where the ids come from ("<mapping file>" or "sorted file names").
        written: files written.
        images_without_detections: ids of images where nothing was found.
        report: the written file's check, as text.
        capped: how many images reached ``TEST.DETECTIONS_PER_IMAGE`` (None: none did).
        checked: whether :func:`check_images` has read every image.
    """

    images: List[tuple]
    id_source: str
    written: List[Path] = field(default_factory=list)
    images_without_detections: List[int] = field(default_factory=list)
    report: str = ""
    capped: Optional[str] = None
    checked: bool = False


def resolve_inputs(images: Sequence, id_map=None) -> PredictionJob:
    """Decide which files get which image ids, checking everything before any inference.

    Args:
        images: one folder, or image files.
        id_map: ``test_image_name_to_ids.json``: every entry's file must exist in the folder
            with the listed size, and every image of the folder must be listed. Without it,
            ids are 1..n in sorted file-name order.

    Raises:
        DatasetError: missing files or folders, no images, or disagreement with the mapping.
    """
    paths = [Path(p) for p in images]
    if len(paths) == 1 and paths[0].is_dir():
        records = load_test_images(paths[0], id_map)
        source = str(id_map) if id_map else "sorted file names"
        return PredictionJob([(r["image_id"], Path(r["file_name"]), r["height"], r["width"])
                              for r in records], source)
    if id_map:
        raise DatasetError(id_map, "a mapping file needs the folder of its images, not a list "
                                   "of files")
    for path in paths:
        if path.is_dir():
            raise DatasetError(path, "give one folder, or image files, not both")
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(path, f"not an image file ({', '.join(IMAGE_EXTENSIONS)})")
    ordered = sorted(paths, key=lambda p: p.name)
    if len({p.name for p in ordered}) != len(ordered):
        raise DatasetError(ordered[0].parent, "two input files share a name")
    return PredictionJob([(i, p, *read_image_size(p)) for i, p in enumerate(ordered, start=1)],
                         "sorted file names")


def check_images(job: PredictionJob) -> PredictionJob:
    """The pre-pass: read every image of ``job`` as inference will, before any inference.

    Each file is decoded whole once (:func:`seg_project.data.image_io.check_image`), so that an
    unreadable image, one beyond the pixel limit, or one of an unsupported shape, number of
    channels, colour mode or pixel type stops the run before anything is predicted or written.

    Returns:
        PredictionJob: ``job``, marked as checked.

    Raises:
        DatasetError: naming the first bad image and its problem.
    """
    for _, path, height, width in tqdm(job.images, desc="checking images", unit="img",
                                       disable=len(job.images) < 20):
        size = check_image(path)
        if size != (height, width):
            raise DatasetError(path, f"decodes to {size[0]}x{size[1]} pixels but its header "
                                     f"says {height}x{width}")
    job.checked = True
    return job


def check_outputs(out_dir, make_zip: bool = False, overwrite: bool = False,
                  formats: Sequence[str] = ("coco",), image_paths: Sequence = ()) -> tuple:
    """Check, before any inference, that the output files can be written.

    Args:
        out_dir: the output folder (``--out``).
        make_zip: whether ``test-results.zip`` is written too.
        overwrite: whether existing files may be replaced.
        formats: the output formats (:data:`seg_project.export.formats.FORMATS`).
        image_paths: the images (their names name the per-image outputs).

    Returns:
        tuple: ``(json_path, zip_path)`` (None for a file not written).

    Raises:
        DatasetError: ``out_dir`` is a file, a target exists without ``overwrite`` or is a
            folder, or nothing can be created there.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown output format(s) {unknown}; known: {', '.join(FORMATS)}")
    if make_zip and "coco" not in formats:
        raise DatasetError(out_dir, "--zip packs test-results.json: add coco to --format")
    out_dir = Path(out_dir)
    json_path = out_dir / RESULTS_NAME if "coco" in formats else None
    zip_path = out_dir / "test-results.zip" if make_zip else None
    for target in filter(None, (json_path, zip_path)):
        check_output_file(target, overwrite, what="submission file")
    check_export_targets(formats, out_dir, image_paths, overwrite)
    return json_path, zip_path


def run_prediction(
    predictor,
    job: PredictionJob,
    out_dir,
    *,
    bbox_format: str = "xywh",
    make_zip: bool = False,
    batch_size: int = 1,
    overwrite: bool = False,
    num_classes: Optional[int] = None,
    formats: Sequence[str] = ("coco",),
    object_type: str = "detection",
    export_threshold: float = 0.0,
    overlap_rule: OverlapRule = NO_RULE,
) -> PredictionJob:
    """Predict every image of ``job``, write ``test-results.json`` (and a zip), check it.

    Every output is written into a staging folder inside ``out_dir`` and moved into place
    only at the end, once the submission passed its check: a failure or a Ctrl-C before then
    leaves ``out_dir`` as it was (see :class:`seg_project.utils.atomic_files.OutputStaging`).

    Args:
        predictor: a :class:`seg_project.inference.predictor.Predictor`.
        job: from :func:`resolve_inputs` (its images are read by :func:`check_images` first,
            unless that has been done).
        out_dir: output folder.
        bbox_format: "xywh" (COCO) or "xyxy".
        make_zip: also write ``test-results.zip`` holding ``test-results.json``.
        batch_size: images per forward pass.
        overwrite: replace an existing ``test-results.json`` (refused otherwise).
        num_classes: K for the check; default the predictor's number of classes.
        formats: output formats (``coco``, ``geojson``, ``label-tiff``, ``course``).
        object_type: QuPath object type of the ``geojson`` features: ``"detection"`` or
            ``"annotation"`` (editable in QuPath).
        export_threshold: the per-image formats (``geojson``, ``label-tiff``, ``course``)
            hold the detections scoring at least this (the submission holds them all).
        overlap_rule: the overlap rule of the per-image formats' instance maps.

    Raises:
        DatasetError: a bad input image, or an output that cannot be written, e.g. it exists
            and ``overwrite`` is False (checked first, see :func:`check_outputs`).
        KeyboardInterrupt: on Ctrl-C, its message saying what was kept.
    """
    paths = [path for _, path, _, _ in job.images]
    json_path, zip_path = check_outputs(out_dir, make_zip, overwrite, formats, paths)
    if not job.checked:
        check_images(job)
    staging = OutputStaging(out_dir)
    try:
        with staging:
            _predict_into(predictor, job, staging, json_path, zip_path, bbox_format,
                          batch_size, num_classes, formats,
                          (object_type, export_threshold, overlap_rule))
    except KeyboardInterrupt as e:
        kept = "the finished outputs were kept" if staging.committed else \
            "no new output was kept"
        raise KeyboardInterrupt(f"{out_dir}: {kept}") from e
    return job


def _predict_into(predictor, job: PredictionJob, staging: OutputStaging, json_path, zip_path,
                  bbox_format: str, batch_size: int, num_classes: Optional[int],
                  formats: Sequence[str], export_options: Tuple) -> None:
    """The body of :func:`run_prediction`: every output is written under ``staging.folder``,
    then (the submission passed its check) moved into place. ``export_options`` are
    ``(object_type, export_threshold, overlap_rule)`` of :func:`write_exports`."""
    paths = [path for _, path, _, _ in job.images]
    by_path = {path: image_id for image_id, path, _, _ in job.images}
    sizes = {image_id: (h, w) for image_id, _, h, w in job.images}
    class_names = list(predictor.cfg.DATASETS.CELLS.CLASS_NAMES)
    colors = distinct_colors(len(class_names))
    staged: List[Path] = []
    predictions: Dict[int, List[Dict]] = {}
    progress = tqdm(predictor.predict_files(paths, batch_size=batch_size), total=len(paths),
                    desc="predicting", unit="img")
    for path, entries in progress:
        predictions[by_path[path]] = entries
        staged += write_exports(formats, staging.folder, path, entries, *sizes[by_path[path]],
                                class_names, colors, *export_options)
    job.images_without_detections = [i for i, entries in predictions.items() if not entries]
    job.capped = log_capped([len(entries) for entries in predictions.values()],
                            predictor.cfg.TEST.DETECTIONS_PER_IMAGE, logger)
    if json_path is None:
        job.report = "no test-results.json written (--format without coco)"
    else:
        entries = build_submission(sorted(predictions.items()), bbox_format=bbox_format)
        staged_json = staging.folder / json_path.name
        staged = write_submission(entries, staged_json, zip_path and (
            staging.folder / zip_path.name)) + staged
        num_classes = num_classes or predictor.cfg.MODEL.ROI_HEADS.NUM_CLASSES
        report = check_submission(staged_json, sizes, num_classes, bbox_format=bbox_format)
        report.source = str(json_path)
        job.report = format_report(report)
        if report.errors:
            raise RuntimeError(f"the written submission fails its check:\n{job.report}")
    staging.commit(remove=stale_exports(formats, staging.out_dir, staging.folder))
    job.written = [staging.target(path) for path in staged]
