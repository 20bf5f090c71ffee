"""Reading images and instance masks of the course layout, with clear errors.

Images become ``HxWx3`` ``uint8`` RGB arrays, whatever the file holds:

- RGBA (the course's LZW TIFFs): the alpha channel is dropped (the course's alpha is a
  constant 255; color values are used as stored, not composited).
- gray (2-D or one channel) is repeated to three channels; gray + alpha drops the alpha.
- ``uint8`` is used as is, always.

Wider data (``uint16``, other integers, floats) follows one rule for a whole dataset, so that
the same stored value becomes the same color in every image of it:

- Fixed mappings, the same for any dataset: integers whose values all lie in 0..255 are cast;
  floats within 0..1 are scaled by 255 (and rounded); floats within 0..255 are cast.
- A dataset whose images hold other values (e.g. 12- or 16-bit microscopy, negative values,
  floats beyond 255) gets an :class:`IntensityRule`: the 0.1st..99.9th percentile range of
  its training images' values (a fixed sample of each, all channels pooled so colors keep
  their balance) is stretched linearly to 0..255, clipped.
  :func:`seg_project.data.stats.compute_intensity_rule` computes it once; it then maps
  *every* non-``uint8`` image of the dataset, training and test alike
  (``read_image(path, rule)``). It is stored with the run (``INPUT.INTENSITY_RANGE`` in
  ``config.yaml`` and ``intensity_rule.json`` beside the weights, see
  :func:`resolve_intensity_rule`), so prediction maps test images exactly as training did.
- An image read on its own, without a rule (e.g. a picture drawn from one file), whose values
  need one is its own dataset: its own 0.1..99.9th percentiles are stretched (a warning says
  so once per process).

(Detectron2's PIL path clips 16-bit data to 255, which turns most microscopy images white, and
cannot open float TIFFs at all.)

Masks are single-channel arrays of whole, non-negative instance ids (0 = background) of any
integer or float dtype; they are returned as ``int32`` (``int64`` if the ids need it).

TIFF colour modes: gray, RGB(A) and JPEG-compressed YCbCr (decoded to RGB) are read as above.
A palette TIFF's image is converted to RGB through its colour map, exactly (a note is logged
once per process); a palette mask's indices are its ids. CMYK and the other colour modes
(CIELAB, ...) are refused, naming the file: their conversion to RGB needs a colour profile,
which the project does not apply; convert such files to RGB first.

Size: an image or mask of more than :func:`max_pixels` pixels (``$SEG_PROJECT_MAX_PIXELS``,
default :data:`DEFAULT_MAX_PIXELS`) is refused from its header, before any memory is
allocated for it.
"""

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ..utils.errors import ConfigError, DatasetError, UserInputError
from ..utils.paths import require_file
from .intensity import IntensityRule, finite_float32, fixed_mapping, rule_of_values

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DatasetError",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "check_image",
    "color_channels",
    "max_pixels",
    "read_array",
    "read_image",
    "read_mask",
    "read_image_size",
    "stored_dtype",
    "to_rgb_uint8",
]

logger = logging.getLogger(__name__)
# Set once an image was stretched by its own percentiles (warned about once per process).
_WARNED_ALONE: list = []

# Files that the image reader accepts (TIFF through tifffile, the others through OpenCV).
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_TIFF_EXTENSIONS = (".tif", ".tiff")
# The environment variable that sets the pixel limit of one image (see max_pixels).
MAX_PIXELS_ENV = "SEG_PROJECT_MAX_PIXELS"
# The default limit: 2**28 pixels (e.g. 16,384 x 16,384; 1 GiB as RGBA uint8), 268 times a
# course image (about 1,000 x 1,000), far below what a forged header can declare.
DEFAULT_MAX_PIXELS = 1 << 28
# Set once a palette image was converted through its colour map (noted once per process).
_NOTED_PALETTE: list = []


def max_pixels() -> int:
    """The most pixels (height x width x pages) one image or mask may have:
    ``$SEG_PROJECT_MAX_PIXELS`` (e.g. ``1e9``), else :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        ConfigError: the variable is set to something else than a positive number.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise ConfigError(MAX_PIXELS_ENV, f"must be a positive number of pixels, got {text!r}")
    return int(value)


def _check_pixels(path: Path, shape: Sequence[int], samples: int = 1) -> None:
    """Refuse, before allocating it, an array of ``shape`` holding ``samples`` values per pixel
    (a pixel counts up to 4 samples: more are counted as further pixels)."""
    pixels = math.prod(int(n) for n in shape) // max(1, min(int(samples), 4))
    limit = max_pixels()
    if pixels > limit:
        raise DatasetError(path, f"declares {pixels:,} pixels (shape {tuple(shape)}), more "
                                 f"than the limit of {limit:,} ({MAX_PIXELS_ENV} sets it)")


def _check_tiff_pixels(path: Path, series) -> None:
    _check_pixels(path, series.shape, series.keyframe.samplesperpixel)


def _palette_to_rgb(path: Path, indices: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` colours of palette ``indices`` (TIFF colour maps are 16-bit; 8-bit ones,
    written by some programs, are used as they are)."""
    colormap = np.asarray(colormap)
    if colormap.ndim != 2 or colormap.shape[0] != 3:
        raise DatasetError(path, f"palette TIFF with an unreadable colour map (shape "
                                 f"{colormap.shape})")
    if indices.size and int(indices.max()) >= colormap.shape[1]:
        raise DatasetError(path, f"palette TIFF: index {int(indices.max())} beyond its colour "
                                 f"map of {colormap.shape[1]} colours")
    if colormap.max() > 255:
        colormap = colormap >> 8  # exact for maps written as v * 257 and as v * 256
    if not _NOTED_PALETTE:
        _NOTED_PALETTE.append(path)
        logger.warning(f"{path}: palette TIFF: its colours are taken from its colour map "
                       "(noted once: other palette images are converted alike)")
    return np.ascontiguousarray(colormap.astype(np.uint8).T[indices])


def _tiff_colours(path: Path, array: np.ndarray, page) -> np.ndarray:
    """The colours of an image read from a TIFF page, by its colour mode (photometric)."""
    import tifffile

    mode = tifffile.PHOTOMETRIC
    photometric = page.photometric
    if photometric == mode.PALETTE:
        return _palette_to_rgb(path, array, page.colormap)
    jpeg = page.compression in (tifffile.COMPRESSION.JPEG, tifffile.COMPRESSION.OJPEG)
    if photometric in (mode.MINISBLACK, mode.MINISWHITE, mode.RGB) or (
            photometric == mode.YCBCR and jpeg):  # tifffile decodes JPEG's YCbCr to RGB
        return array
    name = "CMYK" if photometric == mode.SEPARATED else getattr(photometric, "name", photometric)
    raise DatasetError(path, f"{name} TIFF: this colour mode is not supported (its conversion "
                             "to RGB needs a colour profile); convert the image to RGB first")


def _read_tiff(path: Path, colours: bool) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages or not tif.series:
                raise DatasetError(path, "TIFF holds no image")
            series = tif.series[0]
            _check_tiff_pixels(path, series)
            array = series.asarray()
            if series.axes.endswith("SYX"):  # planar samples -> HxWxS
                array = np.moveaxis(array, -3, -1)
            return _tiff_colours(path, array, series.keyframe) if colours else array
    except UserInputError:  # the file's own problem, or the pixel limit's setting
        raise
    except Exception as e:  # tifffile raises many types for broken files
        detail = f"{type(e).__name__}: {e}"
        if "imagecodecs" in str(e):
            detail += " (install the imagecodecs package to decode compressed TIFFs)"
        raise DatasetError(path, f"cannot read TIFF (corrupt or not a TIFF): {detail}") from e


def _header_shape(path: Path) -> Tuple[int, ...]:
    """``(height, width, bands)`` of a PNG/JPEG/BMP from its header (Pillow reads no pixels)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.height, image.width, len(image.getbands())
    except Image.DecompressionBombError as e:
        raise DatasetError(path, f"declares more pixels than Pillow's decompression-bomb limit "
                                 f"({e})") from e
    except Exception as e:  # Pillow raises many types for broken files
        raise DatasetError(path, f"cannot read image (corrupt or unsupported format): "
                                 f"{type(e).__name__}: {e}") from e


def read_array(path, colours: bool = False) -> np.ndarray:
    """Read the first image of a TIFF (or PNG/JPEG/BMP) file.

    For a TIFF this is its first series, whole: a multi-page stack comes back with all its
    pages (so a mask stored as several pages is seen, not silently cut to its first page),
    and planar (separate) color samples come back channels-last, like contiguous ones.
    Its header is checked against :func:`max_pixels` first.

    Args:
        path: the file.
        colours: read an image's colours (palette TIFFs through their colour map; CMYK and
            other colour modes refused, see the module docstring). False: the values as
            stored (a mask's ids, a palette's indices).

    Raises:
        DatasetError: the file is missing, empty, corrupt, not a readable image, larger than
            the pixel limit, or (``colours``) in an unsupported colour mode.
    """
    path = Path(path)
    require_file(path)
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        return _read_tiff(path, colours)
    height, width, bands = _header_shape(path)
    _check_pixels(path, (height, width, bands), bands)
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DatasetError(path, "cannot read image (corrupt or unsupported format)")
    if array.ndim == 3 and array.shape[2] >= 3:  # OpenCV reads BGR(A)
        array = array[..., [2, 1, 0] + list(range(3, array.shape[2]))]
    return array


def read_image_size(path) -> Tuple[int, int]:
    """Return ``(height, width)`` of an image file from its header (checked against
    :func:`max_pixels`).

    Raises:
        DatasetError: the file is missing, unreadable or larger than the pixel limit.
    """
    import tifffile

    path = Path(path)
    require_file(path)
    if path.suffix.lower() not in _TIFF_EXTENSIONS:
        height, width, bands = _header_shape(path)
        _check_pixels(path, (height, width, bands), bands)
        return height, width
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages or not tif.series:
                raise DatasetError(path, "TIFF holds no image")
            _check_tiff_pixels(path, tif.series[0])
            page = tif.pages[0]
            return int(page.imagelength), int(page.imagewidth)
    except UserInputError:  # the file's own problem, or the pixel limit's setting
        raise
    except Exception as e:
        raise DatasetError(path, f"cannot read TIFF (corrupt or not a TIFF): {e}") from e


def check_image(path) -> Tuple[int, int]:
    """Read an image file as :func:`read_image` will, short of mapping its values to ``uint8``:
    the pre-pass that proves it readable (decoded whole), within the pixel limit, of a
    supported shape, number of channels, colour mode and pixel type.

    Returns:
        tuple: ``(height, width)``.

    Raises:
        DatasetError: naming the file and the problem.
    """
    return tuple(color_channels(read_array(path, colours=True), path).shape[:2])


def color_channels(array: np.ndarray, path="<array>") -> np.ndarray:
    """``HxWx3`` (any dtype) from gray, gray + alpha, RGB or RGBA."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 2:
        array = np.repeat(array[..., :1], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., :3]
    else:
        raise DatasetError(path, f"unsupported image shape {array.shape} (expected HxW, HxWx3 "
                                 "or HxWx4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DatasetError(path, f"image has no pixels (shape {array.shape})")
    if array.dtype.kind not in "biuf":
        raise DatasetError(path, f"unsupported pixel type {array.dtype} (expected integers, "
                                 "floats or booleans)")
    return array


def to_rgb_uint8(array: np.ndarray, path="<array>",
                 rule: Optional[IntensityRule] = None) -> np.ndarray:
    """Convert an image array (gray, gray+alpha, RGB, RGBA; any dtype) to ``HxWx3 uint8``.

    See the module docstring for what happens to alpha and to 16-bit or float data.

    Args:
        array: the image as stored.
        path: named in errors and warnings.
        rule: the dataset's :class:`IntensityRule`; it maps every non-``uint8`` image. None:
            the fixed mappings, else (values that need a rule) the image's own percentiles.

    Raises:
        DatasetError: the array has a shape no image has.
    """
    array = color_channels(array, path)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        if rule is not None:
            array = rule.apply(array)
        else:
            fixed = fixed_mapping(array)
            if fixed is None:
                if not _WARNED_ALONE:
                    _WARNED_ALONE.append(path)
                    logger.warning(
                        f"{path}: {array.dtype} values beyond 0..255 and no dataset intensity "
                        "rule given: stretching this image's own 0.1..99.9th percentiles (images "
                        "read this way may differ in brightness; training and prediction use "
                        "the dataset's rule, INPUT.INTENSITY_RANGE)")
                fixed = rule_of_values(finite_float32(array)).apply(array)
            array = fixed
    return np.ascontiguousarray(array)


def read_image(path, rule: Optional[IntensityRule] = None) -> np.ndarray:
    """Read an image file as an ``HxWx3 uint8`` RGB array (see the module docstring).

    Args:
        path: the image file.
        rule: the dataset's :class:`IntensityRule` (None: fixed mappings or the image's own
            percentiles).

    Raises:
        DatasetError: missing, empty, corrupt or unsupported file.
    """
    return to_rgb_uint8(read_array(path, colours=True), path, rule)


def stored_dtype(path: Path) -> Optional[np.dtype]:
    """The dtype of a TIFF's first series from its header (None: not known without decoding)."""
    if path.suffix.lower() not in _TIFF_EXTENSIONS:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return np.dtype(tif.series[0].dtype) if tif.series else None
    except Exception:
        return None  # read_array names the problem


def read_mask(path) -> np.ndarray:
    """Read an instance-id mask and check it.

    Returns:
        np.ndarray: 2-D ``int32`` array (``int64`` when the ids exceed int32) of instance ids,
        0 being background.

    Raises:
        DatasetError: unreadable file, multi-channel or multi-page mask, or values that are
            negative, NaN, infinite or not whole numbers.
    """
    mask = read_array(path)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise DatasetError(
            path, f"mask must be a single-channel 2-D image, but has shape {mask.shape} "
                  "(multi-channel or several pages)"
        )
    if mask.dtype == bool:
        return mask.astype(np.int32)
    if np.issubdtype(mask.dtype, np.floating):
        finite = np.isfinite(mask)
        if not finite.all():
            bad = "NaN" if np.isnan(mask).any() else "infinite"
            raise DatasetError(path, f"mask holds {bad} values; instance ids must be whole "
                                     "numbers >= 0")
        if mask.size and mask.min() < 0:
            raise DatasetError(path, f"mask holds negative values (min {mask.min():g}); "
                                     "instance ids must be whole numbers >= 0")
        if not np.array_equal(mask, np.floor(mask)):
            frac = mask[mask != np.floor(mask)]
            raise DatasetError(path, f"mask holds values that are not whole numbers (e.g. "
                                     f"{frac.flat[0]:g}); instance ids must be whole numbers")
    elif not np.issubdtype(mask.dtype, np.integer):
        raise DatasetError(path, f"mask has unsupported dtype {mask.dtype}")
    elif mask.size and np.issubdtype(mask.dtype, np.signedinteger) and mask.min() < 0:
        raise DatasetError(path, f"mask holds negative values (min {mask.min()}); instance ids "
                                 "must be whole numbers >= 0")
    top = mask.max() if mask.size else 0
    return mask.astype(np.int32 if top <= np.iinfo(np.int32).max else np.int64, copy=False)
