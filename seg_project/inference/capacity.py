"""How many images reached the per-image detection cap (``TEST.DETECTIONS_PER_IMAGE``).

An image whose detections reached the cap probably had more cells than the model could
report: recall there is cut off. Prediction (``tools/predict.py``) and evaluation report it.
"""

import logging
from typing import Optional, Sequence

__all__ = ["count_capped", "detection_cap_message", "log_capped", "most_capped"]


def _capped(detections_per_image: Sequence[int], cap: int) -> int:
    return sum(1 for n in detections_per_image if cap > 0 and n >= cap)


def most_capped(detections_per_image: Sequence[int], cap: int) -> bool:
    """Whether more than half of the images reached ``cap`` detections."""
    total = len(detections_per_image)
    return total > 0 and 2 * _capped(detections_per_image, cap) > total


def count_capped(detections_per_image: Sequence[int], cap: int) -> Optional[str]:
    """A one-line report of the images whose detections reached ``cap``.

    Args:
        detections_per_image: the number of detections of each image (before any score
            threshold that is applied after the model's own).
        cap: ``TEST.DETECTIONS_PER_IMAGE`` (the most the model returns per image).

    Returns:
        str or None: e.g. ``"3 of 14 images reached TEST.DETECTIONS_PER_IMAGE (1000
        detections)"``, with advice to raise the cap when most did; None when none did.
    """
    total = len(detections_per_image)
    capped = _capped(detections_per_image, cap)
    if not capped:
        return None
    message = (f"{capped} of {total} image{'s' if total != 1 else ''} reached "
               f"TEST.DETECTIONS_PER_IMAGE ({cap} detections)")
    if most_capped(detections_per_image, cap):
        message += (": most did, so detections were probably cut off (lost recall); raise "
                    "TEST.DETECTIONS_PER_IMAGE (tools/predict.py: --max-detections)")
    return message


# The name the evaluator calls it by.
detection_cap_message = count_capped


def log_capped(detections_per_image: Sequence[int], cap: int,
               logger: Optional[logging.Logger] = None) -> Optional[str]:
    """Log :func:`count_capped`'s line: a warning when most images reached the cap, else
    info (also when none did); returns the line (None when none did)."""
    logger = logger or logging.getLogger(__name__)
    message = count_capped(detections_per_image, cap)
    if message is None:
        logger.info(f"No image of {len(detections_per_image)} reached "
                    f"TEST.DETECTIONS_PER_IMAGE ({cap} detections)")
    elif most_capped(detections_per_image, cap):
        logger.warning(message)
    else:
        logger.info(message)
    return message
