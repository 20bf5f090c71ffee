"""The report a finished training run leaves behind (``OUTPUT_DIR/report.html``)."""

import logging
import time

from detectron2.utils import comm

__all__ = ["write_run_report"]

logger = logging.getLogger("seg_project")


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
