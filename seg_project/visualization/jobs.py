"""The whole jobs behind ``tools/visualize_data.py`` and ``tools/visualize.py``, and the
command-line options they share."""

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.instance_map import DEFAULT_RULE, OverlapRule
from ..data.score_threshold import resolve_score_threshold
from ..submission.entries import detect_bbox_format, load_result_entries
from ..utils.cli import number_from_0_to_1, whole_number_at_least
from ..utils.paths import check_output_dir
from .render import picture_targets, render_dataset, render_predictions
from .sources import check_result_ids, load_annotated_source, prediction_records, select_records
from .style import (
    AUTO_LABEL_LIMIT,
    CROWDED_ALPHA,
    DEFAULT_ALPHA,
    DEFAULT_MIN_SIZE,
    RESIZE_MODES,
    TOOL_STYLE,
    DrawStyle,
)

__all__ = [
    "add_picture_arguments",
    "draw_style",
    "picture_options",
    "visualize_dataset",
    "visualize_model",
    "visualize_results",
]

logger = logging.getLogger(__name__)


def add_picture_arguments(parser) -> None:
    """Add the options both drawing tools share (``--out``, sampling, drawing style, size).

    Args:
        parser: the tool's ``argparse.ArgumentParser``.
    """
    parser.add_argument("--out", required=True, help="folder for the pictures "
                        "(<image name>.png)")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="draw N images picked at random (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="draw only these images (folder names in the course layout, "
                             "else file names without extension)")
    parser.add_argument("--split", default="train",
                        help="split folder of a dataset root (default train)")
    parser.add_argument("--class-names", default=None, metavar="A,B,...",
                        help="comma-separated names of classes 1..K (default class1..classK)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="K",
                        help="number of classes of a folder dataset (default 4)")
    parser.add_argument("--config-file", default=None, metavar="CFG",
                        help="seg_project config: registers its datasets (cells_train, "
                             "cells_val, ...) and gives the class names")
    parser.add_argument("--labels", action=argparse.BooleanOptionalAction, default=None,
                        help="label every instance (class, score) / none (default: only "
                             "pictures of at most --label-limit instances)")
    parser.add_argument("--label-limit", type=whole_number_at_least(0), default=AUTO_LABEL_LIMIT,
                        metavar="N",
                        help="above N instances in a picture, labels give way to outlines, a "
                             f"light fill and a legend with counts per class (default "
                             f"{AUTO_LABEL_LIMIT})")
    parser.add_argument("--outlines", action="store_true",
                        help="draw outlines only: no fill, no labels")
    parser.add_argument("--boxes", action="store_true", help="also draw boxes (dashed)")
    parser.add_argument("--alpha", type=number_from_0_to_1, default=None,
                        help=f"mask fill opacity, 0..1 (default {DEFAULT_ALPHA}, or "
                             f"{CROWDED_ALPHA} above --label-limit)")
    parser.add_argument("--max-instances", type=whole_number_at_least(1), default=None, metavar="N",
                        help="draw at most N instances per image, highest scores first (ground "
                             "truth: the first N); the legend says how many were left out "
                             "(default: all)")
    parser.add_argument("--min-size", type=whole_number_at_least(0), default=DEFAULT_MIN_SIZE,
                        metavar="PX",
                        help="draw smaller images larger, to PX on the long side (default "
                             f"{DEFAULT_MIN_SIZE}; 0: the image's size)")
    parser.add_argument("--max-size", type=whole_number_at_least(1), default=None, metavar="PX",
                        help="draw larger images smaller, to PX on the long side (default: "
                             "never; wins over --min-size)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="nearest",
                        help="how images are resized: nearest (crisp pixel blocks, default) or "
                             "smooth; masks are always resized by nearest neighbour")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace pictures that already exist in --out")


def draw_style(args) -> DrawStyle:
    """The drawing style that :func:`add_picture_arguments` options give: the one place
    where the drawing flags become a :class:`~.style.DrawStyle`.

    Args:
        args: the parsed command line.

    Returns:
        DrawStyle: the style.

    Raises:
        ValueError: ``--labels`` with ``--outlines``.
    """
    if args.labels and args.outlines:
        raise ValueError("--labels and --outlines exclude each other (--outlines draws no "
                         "labels)")
    return DrawStyle(labels=args.labels, outlines=args.outlines, label_limit=args.label_limit,
                     boxes=args.boxes, alpha=args.alpha, min_size=args.min_size,
                     max_size=args.max_size, resize=args.resize,
                     max_instances=args.max_instances)


def picture_options(args) -> Dict:
    """The keyword arguments of :func:`visualize_dataset` / :func:`visualize_results` /
    :func:`visualize_model` that :func:`add_picture_arguments` options give: which images,
    where to, and the drawing style (:func:`draw_style`).

    Args:
        args: the parsed command line.

    Returns:
        dict: the keyword arguments.

    Raises:
        ValueError: ``--labels`` with ``--outlines``.
    """
    options = dict(
        out_dir=args.out, sample=args.sample, seed=args.seed, names=args.names,
        split=args.split, config_file=args.config_file,
        config_opts=list(getattr(args, "opts", None) or []),  # tools/visualize.py's overrides
        style=draw_style(args), overwrite=args.overwrite,
        class_names=[n.strip() for n in args.class_names.split(",")] if args.class_names
        else None,
    )
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    return options


def visualize_dataset(
    source,
    out_dir,
    *,
    split: str = "train",
    config_file=None,
    config_opts: Sequence[str] = (),
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
    style: DrawStyle = TOOL_STYLE,
    overwrite: bool = False,
    progress: bool = True,
) -> List[Path]:
    """Draw a dataset's ground truth, one picture per image (``tools/visualize_data.py``).

    Args:
        source: a registered dataset name or a course-layout folder (see
            :func:`load_annotated_source`).
        out_dir: output folder; pictures are ``<image name>.png``.
        split: the split folder of a dataset root.
        config_file: a seg_project config whose datasets are registered first (and whose
            class names are used for folders).
        config_opts: ``KEY VALUE`` overrides of that config.
        class_names, num_classes: the classes of a folder dataset.
        sample, seed, names: which images (see :func:`select_records`).
        style: how to draw (:class:`~.style.DrawStyle`).
        overwrite, progress: see :func:`render_dataset`.

    Returns:
        list[Path]: the pictures written.
    """
    check_output_dir(out_dir, "picture folder")
    if config_file:
        cfg = _load_config(config_file, config_opts)
        class_names = class_names or list(cfg.DATASETS.CELLS.CLASS_NAMES)
    records, metadata = load_annotated_source(source, split, class_names, num_classes)
    chosen = select_records(records, sample, seed, names)
    return render_dataset(chosen, metadata, out_dir, style=style, overwrite=overwrite,
                          progress=progress)


def _cells_setting(score_threshold: Optional[float], overlap_rule: Optional[OverlapRule], cfg,
                   weights) -> Tuple[float, OverlapRule]:
    """The score threshold and overlap rule of the cells drawn (see :func:`visualize_results`),
    logged."""
    threshold = resolve_score_threshold(score_threshold, cfg, weights, flag="--score-threshold")
    if overlap_rule is None:
        overlap_rule = OverlapRule.from_config(cfg) if cfg is not None else DEFAULT_RULE
    logger.info(f"Drawing the cells: {threshold.describe()}; {overlap_rule.describe()}")
    return threshold.value, overlap_rule


def _load_config(config_file, config_opts: Sequence[str] = ()):
    """A seg_project config from a YAML file and ``KEY VALUE`` overrides, with its datasets
    registered."""
    from ..config import load_config, register_datasets_from_config

    cfg = load_config(config_file, config_opts)
    register_datasets_from_config(cfg)
    return cfg


def visualize_results(
    results_file,
    out_dir,
    *,
    images=None,
    id_map=None,
    dataset: Optional[str] = None,
    gt_root=None,
    split: str = "train",
    config_file=None,
    config_opts: Sequence[str] = (),
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
    style: DrawStyle = TOOL_STYLE,
    score_threshold: Optional[float] = None,
    bbox_format: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    overlap_rule: Optional[OverlapRule] = None,
) -> List[Path]:
    """Draw a COCO results JSON over its images (``tools/visualize.py --results``).

    Images come either from ``images`` (a folder; ids from ``id_map``, the course's
    ``test_image_name_to_ids.json``, or else 1..n in sorted file-name order) or from a
    dataset (``dataset``: a registered name; ``gt_root``: a course-layout folder) whose
    ``image_id`` s the results use; its ground truth is then drawn alongside (double width).

    Args:
        results_file: the results JSON.
        out_dir: output folder.
        images, id_map, dataset, gt_root, split: where the images come from (see above).
        config_file: a seg_project config whose datasets are registered first and whose
            class names are used.
        config_opts: ``KEY VALUE`` overrides of that config.
        class_names, num_classes: the classes when no registered dataset gives them
            (default: ``classN`` for N up to the highest ``category_id``, at least 4).
        sample, seed, names: which images to draw (see :func:`select_records`).
        style: how to draw (:class:`~.style.DrawStyle`).
        score_threshold: predictions scoring below it are left out (None: the config's, see
            :func:`seg_project.data.score_threshold.resolve_score_threshold`: its
            ``TEST.PATHOLOGY.SCORE_THRESHOLD`` or operating point, else 0.5).
        bbox_format: ``"xywh"``, ``"xyxy"`` or ``"auto"`` (resolved once for the whole file).
        overwrite, progress: see :func:`render_predictions`.
        overlap_rule: the cells' overlap rule (None: the config's ``TEST.INSTANCE_MAP``,
            else :data:`seg_project.data.instance_map.DEFAULT_RULE`).

    Returns:
        list[Path]: the pictures written.

    Raises:
        DatasetError: bad results file, images, mapping, or ids that match no image.
        ValueError: both or neither of ``images`` and a dataset.
    """
    check_output_dir(out_dir, "picture folder")
    entries = load_result_entries(results_file)
    if not entries:
        logger.warning(f"{results_file}: holds no predictions; drawing the plain images")
    cfg = _load_config(config_file, config_opts) if config_file else None
    if cfg is not None:
        class_names = class_names or list(cfg.DATASETS.CELLS.CLASS_NAMES)
    score_threshold, overlap_rule = _cells_setting(score_threshold, overlap_rule, cfg, None)
    if class_names is None and num_classes is None:
        num_classes = max([4] + [e["category_id"] for e in entries])
    records, metadata, with_gt = prediction_records(images, id_map, dataset, gt_root, split,
                                                     class_names, num_classes)
    check_result_ids(entries, records, results_file)
    if bbox_format == "auto":
        bbox_format = detect_bbox_format(entries)
        logger.info(f"{results_file}: boxes read as {bbox_format}")
    by_image: Dict[int, List[Dict]] = {}
    for entry in entries:
        by_image.setdefault(entry["image_id"], []).append(entry)
    chosen = select_records(records, sample, seed, names)
    picture_targets(chosen, Path(out_dir), overwrite)
    pairs = ((r, by_image.get(r["image_id"], [])) for r in chosen)
    return render_predictions(pairs, metadata, out_dir, style=style,
                              score_threshold=score_threshold, bbox_format=bbox_format,
                              with_ground_truth=with_gt, count=len(chosen), overwrite=overwrite,
                              progress=progress, where=str(results_file),
                              overlap_rule=overlap_rule)


def _predict_files(cfg, weights, device, paths):
    """The model: yields ``(path, entries)`` per image (``seg_project.inference``)."""
    try:
        from ..inference.predictor import Predictor
    except ImportError as e:
        raise RuntimeError(f"drawing a model's predictions needs seg_project.inference: {e}") \
            from e
    predictor = Predictor(cfg, weights=weights, device=device)
    yield from predictor.predict_files(paths)


def visualize_model(
    weights,
    out_dir,
    *,
    config_file,
    config_opts: Sequence[str] = (),
    images=None,
    dataset: Optional[str] = None,
    gt_root=None,
    split: str = "train",
    device: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
    style: DrawStyle = TOOL_STYLE,
    score_threshold: Optional[float] = None,
    bbox_format: str = "xywh",
    overwrite: bool = False,
    progress: bool = True,
    overlap_rule: Optional[OverlapRule] = None,
) -> List[Path]:
    """Run a trained model on images and draw its predictions (``tools/visualize.py
    --config-file --weights``); with a dataset the ground truth is drawn alongside.

    Args:
        weights: the checkpoint (.pth).
        out_dir: output folder.
        config_file: the model's seg_project config (YAML); its datasets are registered, so
            ``dataset="cells_val"`` means the config's validation split.
        config_opts: ``KEY VALUE`` overrides of that config.
        images: a folder or a list of image files (instead of a dataset).
        dataset, gt_root, split: a dataset with ground truth (see :func:`visualize_results`).
        device: "cpu", "cuda", ... (default: the config's ``MODEL.DEVICE``, cpu without a GPU).
        class_names, num_classes: default: the config's ``DATASETS.CELLS.CLASS_NAMES``.
        sample, seed, names, style, overwrite, progress, overlap_rule: see
            :func:`visualize_results`.
        score_threshold: predictions scoring below it are left out (None: the config's
            ``TEST.PATHOLOGY.SCORE_THRESHOLD`` or operating point, else the
            ``operating_point.json`` beside ``weights``, else 0.5).
        bbox_format: the layout of the boxes the model's entries carry (``"xywh"``).

    Returns:
        list[Path]: the pictures written.
    """
    if not config_file:
        raise ValueError("drawing a model's predictions needs its config file (--config-file)")
    check_output_dir(out_dir, "picture folder")  # before the model is loaded and run
    cfg = _load_config(config_file, config_opts)
    class_names = class_names or list(cfg.DATASETS.CELLS.CLASS_NAMES)
    score_threshold, overlap_rule = _cells_setting(score_threshold, overlap_rule, cfg, weights)
    records, metadata, with_gt = prediction_records(images, None, dataset, gt_root, split,
                                                     class_names, num_classes)
    chosen = select_records(records, sample, seed, names)
    picture_targets(chosen, Path(out_dir), overwrite)
    by_path = {str(Path(r["file_name"]).resolve()): r for r in chosen}
    predictions = _predict_files(cfg, str(weights), device, [r["file_name"] for r in chosen])
    pairs = ((by_path[str(Path(path).resolve())], entries) for path, entries in predictions)
    return render_predictions(pairs, metadata, out_dir, style=style,
                              score_threshold=score_threshold, bbox_format=bbox_format,
                              with_ground_truth=with_gt, count=len(chosen), overwrite=overwrite,
                              progress=progress, where=str(weights), overlap_rule=overlap_rule)
