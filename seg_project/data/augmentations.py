"""Training augmentations for cell images beyond Detectron2's resize and flips.

Geometric (moved exactly by :class:`~seg_project.data.cropped_masks.CroppedMasks`):

- :class:`DihedralTransform` / :class:`RandomDihedral`: the 8 orientations of a square
  (rotations by multiples of 90 degrees, optionally after a transpose). Cells have no
  orientation, so all 8 are equally valid views.
- Random crops are Detectron2's own ``T.RandomCrop`` (``INPUT.CROP``), built in
  :func:`seg_project.data.mapper.build_augmentations`.

Colour (image only; boxes and masks untouched):

- :class:`StainJitterTransform` / :class:`RandomStainJitter`: H&E stain jitter in the HED
  colour space of :func:`skimage.color.rgb2hed` / ``hed2rgb`` (each stain's density scaled by
  ``U(1 - sigma, 1 + sigma)`` and shifted by ``U(-bias, bias)``, as in Tellez et al. 2018).
- :class:`RandomSaturation`: Detectron2's saturation jitter with the grey level computed in the
  image's channel order (Detectron2's version assumes RGB, also on BGR inputs).
- Brightness and contrast are Detectron2's ``T.RandomBrightness`` / ``T.RandomContrast``
  (channel-order agnostic).
"""

from typing import List

import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform

__all__ = [
    "COLOR_TRANSFORMS",
    "DihedralTransform",
    "RandomDihedral",
    "RandomSaturation",
    "RandomStainJitter",
    "StainJitterTransform",
    "build_color_augmentations",
]


class DihedralTransform(Transform):
    """One of the 8 orientations of a square: an optional transpose, then ``k`` quarter turns.

    The image becomes ``np.rot90(image.swapaxes(0, 1) if transpose else image, k)`` (``np.rot90``
    turns counter-clockwise as displayed, rows down). Exact: no pixel is resampled.
    """

    def __init__(self, h: int, w: int, k: int, transpose: bool):
        """
        Args:
            h: input image height.
            w: input image width.
            k: number of counter-clockwise quarter turns (any integer; taken modulo 4).
            transpose: whether the image is transposed (x and y swapped) before the turns.
        """
        super().__init__()
        self._set_attributes({"h": int(h), "w": int(w), "k": int(k) % 4,
                              "transpose": bool(transpose)})

    @property
    def output_size(self):
        """``(height, width)`` of the transformed image."""
        if self.transpose != (self.k % 2 == 1):
            return self.w, self.h
        return self.h, self.w

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """Reorient an ``HxW`` or ``HxWxC`` image (any dtype)."""
        assert img.shape[:2] == (self.h, self.w), f"{img.shape[:2]} != {(self.h, self.w)}"
        if self.transpose:
            img = img.swapaxes(0, 1)
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Reorient a full-image segmentation (same as the image)."""
        return self.apply_image(segmentation)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` continuous image coordinates ``(x, y)`` (pixel corners are integers)."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        x, y = coords[:, 0].copy(), coords[:, 1].copy()
        width = self.w
        if self.transpose:
            x, y = y, x
            width = self.h
        height = self.h + self.w - width
        for _ in range(self.k):  # one quarter turn: (x, y) -> (y, W - x); W, H swap
            x, y = y, width - x
            width, height = height, width
        return np.stack([x, y], axis=1)

    def inverse(self) -> Transform:
        """The transform that maps the output back onto the input."""
        out_h, out_w = self.output_size
        # A transpose conjugates a turn into the opposite turn, so T∘R^k is an involution.
        k = self.k if self.transpose else -self.k
        return DihedralTransform(out_h, out_w, k, self.transpose)


class RandomDihedral(T.Augmentation):
    """Pick one of the 8 orientations of :class:`DihedralTransform` uniformly at random
    (the identity, one in 8, is a ``NoOpTransform``)."""

    def get_transform(self, image: np.ndarray) -> Transform:
        """Args: image: the image to reorient. Returns: the chosen transform."""
        k, transpose = int(np.random.randint(4)), bool(np.random.randint(2))
        if k == 0 and not transpose:
            return NoOpTransform()
        return DihedralTransform(image.shape[0], image.shape[1], k, transpose)


def _to_rgb(image: np.ndarray, image_format: str) -> np.ndarray:
    if image_format == "RGB":
        return image
    if image_format == "BGR":
        return image[..., ::-1]
    raise ValueError(f"image format {image_format!r} is not supported (use BGR or RGB)")


_EPS = 1e-6  # skimage's floor of the RGB values before the log (as in rgb2hed)


class StainJitterTransform(Transform):
    """Scale and shift the stain densities of an H&E image in HED space (image only)."""

    def __init__(self, alpha: np.ndarray, beta: np.ndarray, image_format: str = "BGR"):
        """
        Args:
            alpha: ``(3,)`` factors of the H, E and D densities.
            beta: ``(3,)`` offsets added to the H, E and D densities after scaling.
            image_format: channel order of the images, "BGR" or "RGB".
        """
        super().__init__()
        self._set_attributes({"alpha": np.asarray(alpha, dtype=np.float64).reshape(3),
                              "beta": np.asarray(beta, dtype=np.float64).reshape(3),
                              "image_format": image_format})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """Jitter a uint8 ``HxWx3`` image (returned in the same channel order, uint8).

        The densities are ``rgb2hed``'s (its matrices and log scaling) but not clipped at 0,
        so that unjittered colours map back to themselves (``rgb2hed`` clips negative
        densities, which ``hed2rgb`` cannot undo).
        """
        from skimage.color import hed_from_rgb, rgb_from_hed

        assert img.ndim == 3 and img.shape[2] == 3, "stain jitter needs an HxWx3 image"
        rgb = _to_rgb(img, self.image_format).astype(np.float64) / 255.0
        log_adjust = np.log(_EPS)
        hed = (np.log(np.maximum(rgb, _EPS)) / log_adjust) @ hed_from_rgb
        hed = hed * self.alpha + self.beta
        rgb = np.exp((hed @ rgb_from_hed) * log_adjust)
        out = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(_to_rgb(out, self.image_format))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Coordinates are unchanged."""
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Segmentations are unchanged."""
        return segmentation

    def inverse(self) -> Transform:
        """Colour changes are not undone (as Detectron2's colour transforms)."""
        return NoOpTransform()


class RandomStainJitter(T.Augmentation):
    """Draw a :class:`StainJitterTransform`: per-stain factors ``U(1 - sigma, 1 + sigma)`` and
    offsets ``U(-bias, bias)``."""

    def __init__(self, sigma: float, bias: float, image_format: str = "BGR"):
        """
        Args:
            sigma: half-width of the range of the density factors (e.g. 0.05).
            bias: half-width of the range of the density offsets (e.g. 0.02).
            image_format: channel order of the images, "BGR" or "RGB".
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """Args: image: the image (unused but for its channel count). Returns: the transform."""
        alpha = np.random.uniform(1 - self.sigma, 1 + self.sigma, 3)
        beta = np.random.uniform(-self.bias, self.bias, 3)
        return StainJitterTransform(alpha, beta, self.image_format)


class RandomSaturation(T.Augmentation):
    """Saturation jitter (Detectron2's ``T.RandomSaturation``) in either channel order: the
    image is blended with its luma ``0.299 R + 0.587 G + 0.114 B``."""

    def __init__(self, intensity_min: float, intensity_max: float, image_format: str = "BGR"):
        """
        Args:
            intensity_min: lower bound of the blend weight of the image (1 keeps it).
            intensity_max: upper bound of that weight.
            image_format: channel order of the images, "BGR" or "RGB".
        """
        super().__init__()
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image format {image_format!r} is not supported (use BGR or RGB)")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """Args: image: ``HxWx3`` image. Returns: a ``BlendTransform`` with its grey level."""
        assert image.shape[-1] == 3, "RandomSaturation needs a 3-channel image"
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        weights = [0.299, 0.587, 0.114] if self.image_format == "RGB" else [0.114, 0.587, 0.299]
        grayscale = image.dot(weights)[:, :, np.newaxis]
        return T.BlendTransform(src_image=grayscale, src_weight=1 - w, dst_weight=w)


# Transforms that change pixel values only (CroppedMasks and boxes pass through them).
COLOR_TRANSFORMS = (T.BlendTransform, T.ColorTransform, StainJitterTransform)


def build_color_augmentations(cfg) -> List[T.Augmentation]:
    """The colour augmentations that ``INPUT.STAIN_JITTER`` and ``INPUT.COLOR_JITTER`` enable.

    Args:
        cfg: a config with seg_project's keys.

    Returns:
        The augmentations (empty when both are disabled).
    """
    augs: List[T.Augmentation] = []
    if cfg.INPUT.STAIN_JITTER.ENABLED:
        augs.append(RandomStainJitter(cfg.INPUT.STAIN_JITTER.SIGMA, cfg.INPUT.STAIN_JITTER.BIAS,
                                      cfg.INPUT.FORMAT))
    jitter = cfg.INPUT.COLOR_JITTER
    if jitter.ENABLED:
        if jitter.BRIGHTNESS > 0:
            augs.append(T.RandomBrightness(1 - jitter.BRIGHTNESS, 1 + jitter.BRIGHTNESS))
        if jitter.CONTRAST > 0:
            augs.append(T.RandomContrast(1 - jitter.CONTRAST, 1 + jitter.CONTRAST))
        if jitter.SATURATION > 0:
            augs.append(RandomSaturation(1 - jitter.SATURATION, 1 + jitter.SATURATION,
                                         cfg.INPUT.FORMAT))
    return augs
