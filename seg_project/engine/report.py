"""What a finished training run leaves behind: its operating point
(``OUTPUT_DIR/operating_point.json``) and its report (``OUTPUT_DIR/report.html``)."""

import logging
import time
from typing import Dict, Optional

from detectron2.utils import comm

__all__ = ["choose_run_operating_point", "write_run_report"]

logger = logging.getLogger("seg_project")


def choose_run_operating_point(cfg) -> Optional[Dict]:
    """Choose a finished run's operating point on its ``DATASETS.TEST[0]`` (main process only;
    with ``TEST.OPERATING_POINT.ENABLED``), see
    :func:`seg_project.evaluation.operating_point.choose_operating_point`.

    A failure is logged with the command that retries it, never raised: the run itself is
    already saved and complete.

    Returns:
        dict or None: the operating point, None when none was chosen.
    """
    if not comm.is_main_process() or not cfg.TEST.OPERATING_POINT.ENABLED \
            or not cfg.DATASETS.TEST:
        return None
    start = time.perf_counter()
    try:
        from ..evaluation.operating_point import choose_operating_point

        point = choose_operating_point(cfg.OUTPUT_DIR, cfg.DATASETS.TEST[0])
    except Exception:  # noqa: BLE001 - the operating point must not fail a finished training
        logger.exception(f"Could not choose the operating point; retry with: python "
                         f"tools/choose_operating_point.py {cfg.OUTPUT_DIR}")
        return None
    logger.info(f"Operating point chosen in {time.perf_counter() - start:.1f} s")
    return point


def write_run_report(output_dir) -> None:
    """Write ``report.html`` of a finished run (main process only).

    A failure is logged with the command that retries it, never raised: the run itself is
    already saved and complete.
    """
    if not comm.is_main_process():
        return
    start = time.perf_counter()
    try:
        from ..analysis.report import write_report

        path = write_report(output_dir)
    except Exception:  # noqa: BLE001 - the report must not fail a finished training
        logger.exception(f"Could not write the run report; retry with: python tools/report.py "
                         f"{output_dir}")
        return
    logger.info(f"Run report written to {path} ({time.perf_counter() - start:.1f} s)")
