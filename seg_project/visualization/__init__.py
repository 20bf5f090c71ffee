"""Pictures of ground truth and predictions, drawn with Detectron2's ``Visualizer``.

The package gathers the public names of its modules, one job each:

- :mod:`.instances`: annotations and result entries as mask crops and boxes to draw (masks
  decoded within their boxes only);
- :mod:`.draw`: one picture of an image's instances (:func:`draw_ground_truth`,
  :func:`draw_predictions`, :func:`side_by_side`);
- :mod:`.sources`: datasets and image folders as records; picking images;
- :mod:`.render`: pictures written into a folder (:func:`render_dataset`,
  :func:`render_predictions`, :func:`save_png`);
- :mod:`.jobs`: the functions behind ``tools/visualize_data.py`` and ``tools/visualize.py``
  and their shared command-line options.

Results files are read and checked, and their boxes' format told, by the submission package
(:func:`load_results` is :func:`seg_project.submission.entries.load_result_entries`;
:func:`detect_bbox_format` tells ``[x, y, w, h]`` from ``[x1, y1, x2, y2]`` boxes).
"""

from ..submission.entries import detect_bbox_format
from ..submission.entries import load_result_entries as load_results
from .draw import (
    DEFAULT_MIN_SIZE,
    PictureInfo,
    draw_ground_truth,
    draw_predictions,
    legend_lines,
    picture_size,
    picture_style,
    side_by_side,
)
from .instances import BBOX_FORMATS
from .jobs import (
    add_picture_arguments,
    picture_options,
    visualize_dataset,
    visualize_model,
    visualize_results,
)
from .render import render_dataset, render_predictions, save_png
from .sources import (
    class_names_for,
    image_name,
    load_annotated_source,
    metadata_for_classes,
    select_records,
)

__all__ = [
    "DEFAULT_MIN_SIZE",
    "PictureInfo",
    "legend_lines",
    "picture_size",
    "picture_style",
    "add_picture_arguments",
    "BBOX_FORMATS",
    "class_names_for",
    "detect_bbox_format",
    "draw_ground_truth",
    "draw_predictions",
    "image_name",
    "load_annotated_source",
    "load_results",
    "metadata_for_classes",
    "picture_options",
    "render_dataset",
    "render_predictions",
    "save_png",
    "select_records",
    "side_by_side",
    "visualize_dataset",
    "visualize_model",
    "visualize_results",
]
