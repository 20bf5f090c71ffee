"""Synthetic cell images in exactly the course layout: the demo data and the tests' fixture.

:func:`make_synthetic_dataset` writes::

    <out>/train/synthetic_NNNN/image.tif      RGBA uint8, LZW (horizontal predictor), alpha 255
    <out>/train/synthetic_NNNN/classN.tif     float64, uncompressed, whole-number ids 1..n,
                                              only for the classes present in that image
    <out>/test_release/<uuid4>.tif            same image format, no annotations
    <out>/test_image_name_to_ids.json         [{"file_name", "id" 1..n, "height", "width"}]

and nothing else. :func:`render_sample` draws one image and its per-class label masks in memory;
:func:`dataset_sample` gives the exact sample that the writer stores for a (seed, split, index).

The four classes (:data:`CLASS_STYLES`) differ in size, shape and color, like stained tissue:

1. small round dark-purple nuclei (common);
2. larger elongated pink cells with a darker membrane (common);
3. big irregular pale-lavender cells (rare: in about half of the images, few per image);
4. tiny dense blue dots (rare, clustered).

Classes 3 and 4 are rare, as in the course data (~600 vs ~15,000 instances), and each image
holds a random subset of the classes, so some class files are absent. Cells are placed one by
one, uniformly or (often) right next to a cell of the same class, so cells touch and cluster;
the background is a smooth eosin-like stain with fine texture; edges are soft (blurred alpha),
the whole image is slightly blurred and noisy, and each image gets its own stain tint.

Overlap semantics (the choice made here): cells are drawn in placement order, so the image
shows the topmost cell. Within one class file a pixel holds one id, so a later cell occludes an
earlier one of the same class (the earlier id loses those pixels). Across class files masks are
independent and may overlap, as the course format allows: a class-1 nucleus partly hidden under
a class-2 cell keeps its full mask in ``class1.tif``. A cell is only placed if every cell keeps at
least :data:`MIN_VISIBLE_FRACTION` of its pixels visible on top and at most
:data:`MAX_COVERED_FRACTION` of the new cell lies on older cells, so every id keeps pixels, ids
stay 1..n without gaps and the generator's counts equal what the reader finds. Cells may be cut
by the image border (at least :data:`MIN_INSIDE_FRACTION` of a cell lies inside).

Everything is deterministic for a seed: image ``i`` of a split depends only on
``(seed, split, i)`` and the size and cell-count options (not on how many images are made).

Writing never deletes a user's files: a non-empty output folder is refused unless
``overwrite=True``; then the generated files are replaced (each written to a temporary file and
moved into place) and a generated image folder loses only stale ``classN.tif`` files of an
earlier run, which would otherwise be read as annotations of the new image. Everything else is
left alone and listed in the summary's ``untouched``.
"""

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..utils.atomic_files import atomic_write, write_text
from .reader import CLASS_FILE_RE, IMAGE_FILE, MAPPING_FILE, TEST_DIR, TRAIN_DIR

__all__ = [
    "CLASS_STYLES",
    "NUM_CLASSES",
    "CellStyle",
    "SyntheticSample",
    "dataset_sample",
    "format_summary",
    "make_synthetic_dataset",
    "render_sample",
]


@dataclass(frozen=True)
class CellStyle:
    """How the cells of one class look and how often they occur.

    Attributes:
        description: a few words for people.
        radius: range of the equivalent-circle radius in pixels.
        aspect: range of the major/minor axis ratio.
        irregularity: amplitude of the random low harmonics of the outline (0: an ellipse).
        color: mean RGB of the cell body.
        color_jitter: standard deviation of the per-cell color change.
        rim: brightness added at the boundary (negative: a darker membrane).
        texture: standard deviation of the inner (chromatin-like) texture.
        edge_sigma: blur of the cell's edge in pixels.
        opacity: how much the cell hides what lies under it (0..1).
        weight: relative frequency among the cells of an image that holds the class.
        presence: probability that an image holds the class at all.
        cluster: probability that a cell placed next to an earlier one (see
            :data:`TOUCH_FRACTION`) picks one of its own class.
    """

    description: str
    radius: Tuple[float, float]
    aspect: Tuple[float, float]
    irregularity: float
    color: Tuple[int, int, int]
    color_jitter: float
    rim: float
    texture: float
    edge_sigma: float
    opacity: float
    weight: float
    presence: float
    cluster: float


CLASS_STYLES: Dict[int, CellStyle] = {
    1: CellStyle("small round dark-purple nuclei", radius=(3.5, 6.5), aspect=(1.0, 1.35),
                 irregularity=0.06, color=(98, 58, 140), color_jitter=10.0, rim=-22.0,
                 texture=9.0, edge_sigma=0.7, opacity=0.95, weight=0.50, presence=0.9,
                 cluster=0.35),
    2: CellStyle("larger elongated pink cells", radius=(6.5, 10.5), aspect=(1.8, 3.0),
                 irregularity=0.05, color=(222, 122, 168), color_jitter=8.0, rim=-40.0,
                 texture=6.0, edge_sigma=0.9, opacity=0.9, weight=0.44, presence=0.85,
                 cluster=0.35),
    3: CellStyle("big irregular pale cells", radius=(12.0, 19.0), aspect=(1.0, 1.5),
                 irregularity=0.18, color=(206, 188, 226), color_jitter=6.0, rim=-50.0,
                 texture=5.0, edge_sigma=1.1, opacity=0.85, weight=0.06, presence=0.5,
                 cluster=0.2),
    4: CellStyle("tiny dense blue dots", radius=(1.6, 2.8), aspect=(1.0, 1.2),
                 irregularity=0.0, color=(38, 58, 168), color_jitter=8.0, rim=0.0,
                 texture=4.0, edge_sigma=0.55, opacity=1.0, weight=0.06, presence=0.5,
                 cluster=0.7),
}
NUM_CLASSES = len(CLASS_STYLES)

# Placement rules (see the module docstring).
MIN_VISIBLE_FRACTION = 0.65  # every placed cell keeps this share of its pixels visible on top
MAX_COVERED_FRACTION = 0.3  # at most this share of a new cell lies on older cells
MIN_INSIDE_FRACTION = 0.4  # share of a cell that must lie inside the image
MIN_CELL_PIXELS = 4
TOUCH_FRACTION = 0.45  # share of placement proposals right next to an earlier cell
PLACEMENT_TRIES = 12  # proposals per cell before it is left out (crowded images get fewer)
MIN_IMAGE_SIDE = 32
MAX_IMAGE_SIDE = 4096

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision (1/16 px)
_TRAIN_STREAM, _TEST_STREAM, _EMPTY_STREAM = 0, 1, 2
_SPLIT_STREAMS = {"train": _TRAIN_STREAM, "test": _TEST_STREAM}
_PAPER = np.array([244.0, 236.0, 242.0], np.float32)  # unstained background
_EOSIN = np.array([230.0, 182.0, 208.0], np.float32)  # stained tissue


class SyntheticSample(NamedTuple):
    """One rendered image and its annotation.

    Attributes:
        image: ``HxWx3`` ``uint8`` RGB (what :func:`seg_project.data.image_io.read_image`
            returns for the written ``image.tif``).
        masks: class number N -> ``HxW`` ``int32`` ids 1..n (0 background), only for the
            classes with at least one cell.
    """

    image: np.ndarray
    masks: Dict[int, np.ndarray]

    def counts(self) -> Dict[int, int]:
        """Number of instances per class number, 0 for absent classes."""
        return {c: int(self.masks[c].max()) if c in self.masks else 0 for c in CLASS_STYLES}


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Noise in 0..1 that varies over about ``cell`` pixels (bicubic upsampling of a grid)."""
    grid = rng.standard_normal((int(height / cell) + 3, int(width / cell) + 3), np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo) if hi > lo else np.zeros_like(field)


def _fine_noise(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise with unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape, np.float32), (0, 0), sigma)
    std = float(noise.std())
    return noise / std if std > 0 else noise


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An ``HxWx3`` float32 stained-tissue background: smooth stain patches plus fibers."""
    stain = _smooth_noise(rng, height, width, cell=max(16.0, min(height, width) / 4)) ** 1.5
    canvas = _PAPER + (_EOSIN - _PAPER) * stain[..., None]
    canvas += 4.0 * _fine_noise(rng, (height, width), 1.5)[..., None]
    return canvas.astype(np.float32)


def _cell_outline(rng: np.random.Generator, style: CellStyle) -> Tuple[np.ndarray, float]:
    """A random closed outline around (0, 0) as ``(N, 2)`` x/y, and its equivalent radius."""
    radius = rng.uniform(*style.radius)
    aspect = rng.uniform(*style.aspect)
    theta = np.linspace(0.0, 2 * np.pi, 16 if radius < 4 else 36, endpoint=False)
    radial = np.ones_like(theta)
    for harmonic in range(2, 6):
        amplitude = style.irregularity * rng.normal() / (harmonic - 1)
        radial += amplitude * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    radial = np.clip(radial, 0.45, None)
    x = radius * np.sqrt(aspect) * radial * np.cos(theta)
    y = radius / np.sqrt(aspect) * radial * np.sin(theta)
    angle = rng.uniform(0, np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([cos * x - sin * y, sin * x + cos * y], axis=1), radius


def _propose_center(rng, style: CellStyle, radius: float, cls: int, placed: List[Dict],
                    height: int, width: int) -> np.ndarray:
    """A uniform center, or one touching an earlier cell (often one of the same class)."""
    if placed and rng.random() < TOUCH_FRACTION:
        same = [cell for cell in placed if cell["class"] == cls]
        pool = same if same and rng.random() < style.cluster else placed
        anchor = pool[rng.integers(len(pool))]
        direction = rng.uniform(0, 2 * np.pi)
        distance = (anchor["radius"] + radius) * rng.uniform(0.8, 1.05)
        return anchor["center"] + distance * np.array([np.cos(direction), np.sin(direction)])
    return rng.uniform((0, 0), (width, height))


def _rasterize(polygon: np.ndarray, height: int, width: int, pad: int):
    """Fill a polygon into the crop of its padded bounding box, clipped to the image.

    Returns:
        ``(mask, box)``: a boolean crop and its ``(rows, cols)`` slices, or None when the crop
        lies outside the image.
    """
    x0 = max(int(np.floor(polygon[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(polygon[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(polygon[:, 0].max())) + pad + 1, width)
    y1 = min(int(np.ceil(polygon[:, 1].max())) + pad + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    points = np.round((polygon - (x0, y0)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(crop, [points], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return crop.astype(bool), (slice(y0, y1), slice(x0, x1))


def _paint_cell(canvas: np.ndarray, rng: np.random.Generator, style: CellStyle,
                mask: np.ndarray, box: Tuple[slice, slice]) -> None:
    """Composite one cell (soft edge, darker rim, inner texture) onto ``canvas[box]``."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), style.edge_sigma) * style.opacity
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    rim = np.where(mask, np.exp(-inside / 1.5), 0.0).astype(np.float32)
    shade = style.rim * rim + style.texture * _fine_noise(rng, mask.shape, 1.0)
    color = np.asarray(style.color, np.float32) + rng.normal(0, style.color_jitter / 2, 3)
    color += rng.normal(0, style.color_jitter)  # overall brightness of this cell
    body = color.astype(np.float32) + shade[..., None]
    region = canvas[box]
    region += alpha[..., None] * (body - region)


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics and scanner: slight blur, a per-image stain tint, sensor noise; to ``uint8``."""
    image = cv2.GaussianBlur(canvas, (0, 0), 0.6)
    image *= (1.0 + rng.normal(0, 0.03, 3)).astype(np.float32)
    image += rng.normal(0, 2.5, image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _check_classes(classes: Optional[Sequence[int]]) -> List[int]:
    if classes is None:
        return sorted(CLASS_STYLES)
    chosen = sorted(set(int(c) for c in classes))
    bad = [c for c in chosen if c not in CLASS_STYLES]
    if bad:
        raise ValueError(f"unknown class number(s) {bad}; the classes are 1..{NUM_CLASSES}")
    return chosen


def _placement_fits(hits: np.ndarray, area: int, placed: List[Dict]) -> bool:
    """The placement rules of the module docstring; ``hits[j + 1]``: pixels over cell j."""
    if hits[1:].sum() > MAX_COVERED_FRACTION * area:
        return False
    return all(placed[j]["visible"] - hits[j + 1] >= MIN_VISIBLE_FRACTION * placed[j]["area"]
               for j in np.flatnonzero(hits[1:]))


def render_sample(height: int, width: int, num_cells: int = 20,
                  classes: Optional[Sequence[int]] = None, seed=None) -> SyntheticSample:
    """Render one synthetic image and its per-class instance masks in memory.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        num_cells: cells to place; fewer are placed when an image is too crowded for the
            overlap rules (see the module docstring). 0 gives a valid negative (no cells).
        classes: the class numbers that may appear (default all, 1..4); cells pick a class
            by the styles' weights.
        seed: anything :func:`numpy.random.default_rng` accepts, a ``Generator`` included.

    Returns:
        SyntheticSample: the ``HxWx3 uint8`` image and ``{class: HxW int32 ids 1..n}`` for the
        classes that got at least one cell.

    Raises:
        ValueError: a non-positive size, a negative cell count or an unknown class.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if num_cells < 0:
        raise ValueError(f"num_cells must be >= 0, got {num_cells}")
    classes = _check_classes(classes)
    rng = np.random.default_rng(seed)
    canvas = _background(rng, height, width)
    owner = np.zeros((height, width), np.int32)  # 1 + index of the topmost cell, 0: none
    labels: Dict[int, np.ndarray] = {}
    placed: List[Dict] = []
    weights = np.array([CLASS_STYLES[c].weight for c in classes])
    for _ in range(num_cells if classes else 0):
        cls = classes[rng.choice(len(classes), p=weights / weights.sum())]
        style = CLASS_STYLES[cls]
        for _attempt in range(PLACEMENT_TRIES):
            outline, radius = _cell_outline(rng, style)
            center = _propose_center(rng, style, radius, cls, placed, height, width)
            polygon = outline + center
            rasterized = _rasterize(polygon, height, width, pad=int(3 * style.edge_sigma) + 1)
            if rasterized is None:
                continue
            mask, box = rasterized
            area = int(mask.sum())
            if area < max(MIN_CELL_PIXELS, MIN_INSIDE_FRACTION * cv2.contourArea(
                    polygon.astype(np.float32))):
                continue
            hits = np.bincount(owner[box][mask], minlength=len(placed) + 1)
            if not _placement_fits(hits, area, placed):
                continue
            for j in np.flatnonzero(hits[1:]):
                placed[j]["visible"] -= int(hits[j + 1])
            owner[box][mask] = len(placed) + 1
            class_labels = labels.setdefault(cls, np.zeros((height, width), np.int32))
            class_labels[box][mask] = sum(cell["class"] == cls for cell in placed) + 1
            placed.append({"class": cls, "center": center, "radius": radius, "area": area,
                           "visible": area})
            _paint_cell(canvas, rng, style, mask, box)
            break
    return SyntheticSample(_finish(canvas, rng), dict(sorted(labels.items())))


def _draw_size(rng: np.random.Generator, min_size: int, max_size: int) -> Tuple[int, int]:
    height, width = rng.integers(min_size, max_size + 1, size=2)
    return int(height), int(width)


def _draw_classes(rng: np.random.Generator) -> List[int]:
    """The classes one image holds: each by its style's presence, at least the commonest."""
    present = [c for c, style in CLASS_STYLES.items() if rng.random() < style.presence]
    return present or [max(CLASS_STYLES, key=lambda c: CLASS_STYLES[c].weight)]


def dataset_sample(seed: int, split: str, index: int, min_size: int = 96, max_size: int = 192,
                   cells_per_image: Tuple[int, int] = (8, 30), empty: bool = False
                   ) -> SyntheticSample:
    """The sample that :func:`make_synthetic_dataset` writes as image ``index`` of a split.

    Args:
        seed: the dataset's seed (>= 0).
        split: ``"train"`` or ``"test"``.
        index: 0-based position in the split.
        min_size: smallest image side.
        max_size: largest image side.
        cells_per_image: inclusive range of the number of cells to place.
        empty: draw no cells (a valid negative); the size stays that of the non-empty image.

    Returns:
        SyntheticSample: see :func:`render_sample`.

    Raises:
        ValueError: an unknown split.
    """
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAMS)}, got {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index])
    height, width = _draw_size(rng, min_size, max_size)
    num_cells = int(rng.integers(cells_per_image[0], cells_per_image[1] + 1))
    classes = _draw_classes(rng)
    return render_sample(height, width, 0 if empty else num_cells, classes, seed=rng)


def _test_file_name(seed: int, index: int) -> str:
    """A version-4 UUID file name derived from (seed, index), like the course's test names."""
    rng = np.random.default_rng([seed, _TEST_STREAM, index, 1])
    return f"{uuid.UUID(bytes=rng.bytes(16), version=4)}.tif"


def _write_image(path: Path, image: np.ndarray) -> None:
    """Write RGB as the course's RGBA uint8 LZW TIFF (alpha 255, horizontal predictor)."""
    import tifffile

    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    atomic_write(path, lambda target: tifffile.imwrite(
        target, rgba, photometric="rgb", compression="lzw", predictor=True, metadata=None,
        software=False))


def _write_mask(path: Path, labels: np.ndarray) -> None:
    """Write instance ids as the course's single-channel float64 uncompressed TIFF."""
    import tifffile

    atomic_write(path, lambda target: tifffile.imwrite(
        target, labels.astype(np.float64), photometric="minisblack", metadata=None,
        software=False))


def _make_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder; move it away first")
    path.mkdir(parents=True, exist_ok=True)


def _write_annotated_folder(folder: Path, sample: SyntheticSample) -> None:
    """Write ``image.tif`` and the class files; drop stale ``classN.tif`` of an earlier run."""
    _make_folder(folder)
    _write_image(folder / IMAGE_FILE, sample.image)
    for number, labels in sample.masks.items():
        _write_mask(folder / f"class{number}.tif", labels)
    for path in folder.iterdir():
        match = CLASS_FILE_RE.match(path.name)
        if match and int(match.group(1)) not in sample.masks and path.is_file():
            path.unlink()


def _check_options(num_train, num_test, seed, min_size, max_size, cells_per_image,
                   empty_images) -> None:
    problems = []
    if num_train < 1:
        problems.append(f"num_train must be >= 1, got {num_train}")
    if num_test < 1:
        problems.append(f"num_test must be >= 1, got {num_test}")
    if seed < 0:
        problems.append(f"seed must be >= 0, got {seed}")
    if not MIN_IMAGE_SIDE <= min_size <= max_size <= MAX_IMAGE_SIDE:
        problems.append(f"need {MIN_IMAGE_SIDE} <= min_size <= max_size <= {MAX_IMAGE_SIDE}, "
                        f"got min_size={min_size}, max_size={max_size}")
    if len(cells_per_image) != 2 or not 0 <= cells_per_image[0] <= cells_per_image[1]:
        problems.append(f"cells_per_image must be (low, high) with 0 <= low <= high, got "
                        f"{tuple(cells_per_image)}")
    if not 0 <= empty_images <= num_train:
        problems.append(f"empty_images must be in 0..num_train ({num_train}), got "
                        f"{empty_images}")
    if problems:
        raise ValueError("; ".join(problems))


def _prepare_root(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root}: folder is not empty; pass overwrite=True (--force) to "
                              "replace the generated files (nothing else is deleted)")
    root.mkdir(parents=True, exist_ok=True)


def _untouched(root: Path, generated: set) -> List[str]:
    """Entries of the output folders that this run did not write (a user's or older files)."""
    leftovers = []
    for folder in (root, root / TRAIN_DIR, root / TEST_DIR):
        for path in sorted(folder.iterdir()):
            if path not in generated:
                leftovers.append(str(path))
    return leftovers


def make_synthetic_dataset(out_dir, num_train: int = 12, num_test: int = 4, seed: int = 0,
                           min_size: int = 96, max_size: int = 192,
                           cells_per_image: Tuple[int, int] = (8, 30), empty_images: int = 0,
                           overwrite: bool = False, progress: bool = False) -> Dict:
    """Write a synthetic dataset in the course layout (see the module docstring).

    Args:
        out_dir: the dataset root to create; it must not exist or be empty unless
            ``overwrite``.
        num_train: annotated images in ``train/``.
        num_test: unannotated images in ``test_release/`` (listed in the mapping file).
        seed: makes the dataset; the same seed and options give byte-identical files.
        min_size: smallest image side in pixels (both splits; at least 32).
        max_size: largest image side in pixels.
        cells_per_image: inclusive range of the cells drawn per image.
        empty_images: how many training images have no cells at all (valid negatives).
        overwrite: write into a non-empty folder, replacing only the generated files.
        progress: show a tqdm progress bar.

    Returns:
        dict: ``root``, ``train_dir``, ``test_dir``, ``mapping_file`` (str paths), ``seed``,
        ``train_images`` (``name``, ``height``, ``width``, ``instances`` per class name),
        ``test_images`` (the mapping entries), ``instances_per_class`` (``"class1"``..),
        ``instances``, ``empty_images`` (names of training images without instances) and
        ``untouched`` (pre-existing entries of the output folders that were left alone).

    Raises:
        ValueError: invalid options.
        FileExistsError: ``out_dir`` is a file, or a non-empty folder without ``overwrite``.
    """
    from tqdm import tqdm

    _check_options(num_train, num_test, seed, min_size, max_size, cells_per_image,
                   empty_images)
    root = Path(out_dir)
    _prepare_root(root, overwrite)
    train_dir, test_dir, mapping_file = root / TRAIN_DIR, root / TEST_DIR, root / MAPPING_FILE
    _make_folder(train_dir)
    _make_folder(test_dir)
    options = {"min_size": min_size, "max_size": max_size, "cells_per_image": cells_per_image}
    empty = set(np.random.default_rng([seed, _EMPTY_STREAM]).choice(
        num_train, size=empty_images, replace=False).tolist())
    totals = {f"class{c}": 0 for c in CLASS_STYLES}
    train_images, generated = [], {train_dir, test_dir, mapping_file}
    bar = tqdm(total=num_train + num_test, desc="synthetic images", unit="img",
               disable=not progress)
    for index in range(num_train):
        sample = dataset_sample(seed, "train", index, empty=index in empty, **options)
        folder = train_dir / f"synthetic_{index:04d}"
        _write_annotated_folder(folder, sample)
        counts = {f"class{c}": n for c, n in sample.counts().items()}
        for name, count in counts.items():
            totals[name] += count
        train_images.append({"name": folder.name, "height": sample.image.shape[0],
                             "width": sample.image.shape[1], "instances": counts})
        generated.add(folder)
        bar.update()
    entries = []
    for index in range(num_test):
        sample = dataset_sample(seed, "test", index, **options)
        path = test_dir / _test_file_name(seed, index)
        _write_image(path, sample.image)
        entries.append({"file_name": path.name, "id": index + 1,
                        "height": sample.image.shape[0], "width": sample.image.shape[1]})
        generated.add(path)
        bar.update()
    bar.close()
    write_text(mapping_file, json.dumps(entries, indent=4))
    return {
        "root": str(root),
        "train_dir": str(train_dir),
        "test_dir": str(test_dir),
        "mapping_file": str(mapping_file),
        "seed": seed,
        "train_images": train_images,
        "test_images": entries,
        "instances_per_class": totals,
        "instances": sum(totals.values()),
        "empty_images": [image["name"] for image in train_images
                         if not any(image["instances"].values())],
        "untouched": _untouched(root, generated),
    }


def format_summary(summary: Dict) -> str:
    """Human-readable lines for a :func:`make_synthetic_dataset` summary."""
    train, test = summary["train_images"], summary["test_images"]
    sides = [side for image in train + test for side in (image["height"], image["width"])]
    lines = [
        f"synthetic dataset (seed {summary['seed']}) written to {summary['root']}",
        f"  train: {len(train)} images in {summary['train_dir']}, "
        f"{summary['instances']} instances"
        + (f", {len(summary['empty_images'])} without any" if summary["empty_images"] else ""),
    ]
    for name, count in summary["instances_per_class"].items():
        present = sum(1 for image in train if image["instances"][name])
        lines.append(f"    {name}: {count} instances in {present} images "
                     f"({CLASS_STYLES[int(name[5:])].description})")
    lines.append(f"  test:  {len(test)} images in {summary['test_dir']}, listed in "
                 f"{summary['mapping_file']}")
    lines.append(f"  image sides: {min(sides)}..{max(sides)} px")
    if summary["untouched"]:
        shown = ", ".join(summary["untouched"][:5])
        more = len(summary["untouched"]) - 5
        lines.append(f"  note: {len(summary['untouched'])} entries that this run did not write "
                     f"were left as they were and sit among the data: {shown}"
                     + (f" (+{more} more)" if more > 0 else ""))
    return "\n".join(lines)
