"""Pictures of ground truth and predictions over their images.

Masks, outlines and boxes are composited with NumPy and OpenCV (fast for thousands of
nuclei), the legend strip and panel titles are OpenCV text, and only the per-instance labels
("class 87%") go through Detectron2's ``Visualizer``. The package gathers the public names of
its modules, one job each:

- :mod:`.style`: how pictures are drawn: :class:`DrawStyle` (size, labels, fill, boxes,
  legend, cap), carried from the command line to every picture; :func:`picture_style`,
  :func:`picture_size`;
- :mod:`.instances`: annotations and result entries as mask crops and boxes to draw (masks
  decoded within their boxes only);
- :mod:`.draw`: one picture of an image's instances (:func:`draw_ground_truth`,
  :func:`draw_predictions`, :func:`side_by_side`);
- :mod:`.text`: the legend strip under the image, panel titles, instance labels;
- :mod:`.sources`: datasets and image folders as records; picking images;
- :mod:`.render`: pictures written into a folder (:func:`render_dataset`,
  :func:`render_predictions`, :func:`save_png`);
- :mod:`.jobs`: the functions behind ``tools/visualize_data.py`` and ``tools/visualize.py``,
  their shared command-line options and the one mapping of those onto a :class:`DrawStyle`
  (:func:`draw_style`).

Results files are read and checked, and their boxes' format told, by the submission package
(:func:`load_results` is :func:`seg_project.submission.entries.load_result_entries`;
:func:`detect_bbox_format` tells ``[x, y, w, h]`` from ``[x1, y1, x2, y2]`` boxes).
"""

from ..submission.entries import detect_bbox_format
from ..submission.entries import load_result_entries as load_results
from .draw import (
    PictureInfo,
    draw_ground_truth,
    draw_predictions,
    legend_height,
    legend_lines,
    picture_shape,
    side_by_side,
    threshold_text,
)
from .instances import BBOX_FORMATS
from .jobs import (
    add_picture_arguments,
    draw_style,
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
from .style import DEFAULT_MIN_SIZE, TOOL_STYLE, DrawStyle, picture_size, picture_style

__all__ = [
    "DEFAULT_MIN_SIZE",
    "DrawStyle",
    "PictureInfo",
    "TOOL_STYLE",
    "draw_style",
    "legend_height",
    "legend_lines",
    "picture_shape",
    "threshold_text",
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
