"""Pictures written into a folder: one ``<image name>.png`` per image, atomically."""

from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.image_io import read_image
from ..data.instance_map import OverlapRule
from ..utils.atomic_files import atomic_write
from .draw import draw_ground_truth, draw_predictions, side_by_side
from .sources import image_name
from .style import TOOL_STYLE, DrawStyle

__all__ = ["picture_targets", "render_dataset", "render_predictions", "save_png"]


def save_png(path, image: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an RGB picture as PNG, atomically (a temporary file, then a rename).

    Args:
        path: the PNG file.
        image: ``HxWx3 uint8`` RGB picture.
        overwrite: whether an existing file may be replaced.

    Returns:
        Path: ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: the picture cannot be encoded or written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True / --overwrite to "
                              "replace it)")
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: cannot encode a picture of shape {image.shape} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: Path(temp).write_bytes(data.tobytes()))
    return path


def picture_targets(records: Sequence[Dict], out_dir: Path, overwrite: bool) -> List[Path]:
    """The picture files of the records, checked before anything is drawn.

    Args:
        records: the images' records.
        out_dir: the picture folder.
        overwrite: whether existing pictures may be replaced.

    Returns:
        list[Path]: one ``<image name>.png`` per record.

    Raises:
        ValueError: two images would get one picture name.
        FileExistsError: a picture exists and ``overwrite`` is False.
    """
    seen: Dict[str, str] = {}
    for record in records:
        name = image_name(record["file_name"])
        if name in seen:
            raise ValueError(f"two images would both be drawn to {name}.png: {seen[name]} and "
                             f"{record['file_name']}")
        seen[name] = record["file_name"]
    targets = [out_dir / f"{name}.png" for name in seen]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir}: {len(existing)} picture(s) already exist (e.g. "
                              f"{existing[0].name}); pass --overwrite to replace them")
    return targets


def render_dataset(
    records: Sequence[Dict],
    metadata,
    out_dir,
    *,
    style: DrawStyle = TOOL_STYLE,
    overwrite: bool = False,
    progress: bool = True,
) -> List[Path]:
    """Draw each record's ground truth over its image into ``out_dir/<image name>.png``.

    Args:
        records: dataset dicts (see :func:`draw_ground_truth`).
        metadata: their Detectron2 metadata.
        out_dir: output folder (created if needed).
        style: how to draw (default :data:`~.style.TOOL_STYLE`: small images drawn up to
            1,024 px).
        overwrite: replace existing pictures (otherwise refuse before drawing anything).
        progress: show a progress bar.

    Returns:
        list[Path]: the pictures written.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    targets = picture_targets(records, out_dir, overwrite)
    for record, target in tqdm(list(zip(records, targets)), desc="drawing", unit="image",
                               disable=not progress):
        picture = draw_ground_truth(read_image(record["file_name"]), record, metadata, style)
        save_png(target, picture, overwrite=overwrite)
    return targets


def render_predictions(
    pairs: Iterable[Tuple[Dict, Sequence[Dict]]],
    metadata,
    out_dir,
    *,
    style: DrawStyle = TOOL_STYLE,
    score_threshold: float = 0.5,
    bbox_format: str = "xywh",
    with_ground_truth: bool = False,
    count: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
    where: str = "<predictions>",
    overlap_rule: Optional[OverlapRule] = None,
) -> List[Path]:
    """Draw predictions, optionally next to the ground truth, one picture per image.

    Args:
        pairs: ``(record, entries)`` per image: a dataset dict (with ``annotations`` when
            ``with_ground_truth``) and its COCO result entries; may be a lazy generator.
        metadata: Detectron2 metadata of the classes.
        out_dir: output folder; pictures are ``<image name>.png``.
        style: how to draw (default :data:`~.style.TOOL_STYLE`); the ground truth is drawn
            with the same style but no boxes, so both halves have one scale.
        score_threshold, bbox_format, overlap_rule: see :func:`draw_predictions`.
        with_ground_truth: draw ground truth (left) and predictions (right), double width.
        count: the number of pairs, for the progress bar.
        overwrite: replace existing pictures.
        progress: show a progress bar.
        where: named in errors about entries (e.g. the results file).

    Returns:
        list[Path]: the pictures written.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    written = []
    truth_style = replace(style, boxes=False)
    for record, entries in tqdm(pairs, total=count, desc="drawing", unit="image",
                                disable=not progress):
        target = picture_targets([record], out_dir, overwrite)[0]
        if target in written:
            raise ValueError(f"two images would both be drawn to {target}")
        image = read_image(record["file_name"])
        picture = draw_predictions(image, entries, metadata, score_threshold, style,
                                   bbox_format=bbox_format, where=where,
                                   overlap_rule=overlap_rule)
        if with_ground_truth:
            truth = draw_ground_truth(image, record, metadata, truth_style)
            picture = side_by_side(truth, picture)
        written.append(save_png(target, picture, overwrite=overwrite))
    return written
