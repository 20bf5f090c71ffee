"""A failed write while training (a full disk) stops the run with one error naming the file.

Checkpoints name themselves (:mod:`seg_project.utils.atomic_files`). The files a run writes
in place as they grow name themselves here:

- ``metrics.json``: :class:`NamedJSONWriter`, Detectron2's ``JSONWriter`` whose write and
  close raise an ``OSError`` naming the file;
- ``log.txt``: :func:`stop_on_log_write_errors`. Python's logging prints a traceback for every
  record it cannot write and goes on; here the first failed write raises an ``OSError`` naming
  the log (in the code that logged), and the log leaves its loggers so that the rest is still
  said on the console. Before that is in place (while Detectron2 sets up the loggers and
  writes ``config.yaml``), :func:`log_write_errors_unreported` keeps logging quiet.
"""

import contextlib
import logging
import os
import sys

from detectron2.utils.events import JSONWriter

from ..utils.atomic_files import naming_target

__all__ = ["NamedJSONWriter", "log_write_errors_unreported", "stop_on_log_write_errors"]

# The loggers Detectron2's default_setup and the project's start_run point at log.txt.
_RUN_LOGGERS = ("detectron2", "fvcore", "seg_project")


class NamedJSONWriter(JSONWriter):
    """``JSONWriter`` whose failed writes raise an ``OSError`` naming its file."""

    def __init__(self, json_file: str, window_size: int = 20):
        super().__init__(json_file, window_size)
        self.path = json_file

    def write(self) -> None:
        with naming_target(self.path):
            super().write()

    def close(self) -> None:
        with naming_target(self.path):
            super().close()


class _LogWriteFailure:
    """``handleError`` of the handlers that write ``path``: raise the write's ``OSError``
    naming the file, once, after taking those handlers off their loggers."""

    def __init__(self, path: str, handlers):
        self.path = path
        self.handlers = handlers

    def __call__(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            logging.Handler.handleError(self.handlers[0][1], record)
            return
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
        with naming_target(self.path):
            raise error


def stop_on_log_write_errors(log_file: str) -> None:
    """Make a failed write to ``log_file`` raise an ``OSError`` naming it (see the module
    doc); call after the run's loggers are set up."""
    target = os.path.abspath(log_file)
    handlers = [(logger, handler)
                for logger in map(logging.getLogger, _RUN_LOGGERS)
                for handler in logger.handlers
                if os.path.abspath(str(getattr(getattr(handler, "stream", None), "name", "")))
                == target]
    failure = _LogWriteFailure(log_file, handlers)
    for _, handler in handlers:
        handler.handleError = failure


@contextlib.contextmanager
def log_write_errors_unreported():
    """In the block, Python's logging drops what it cannot write without printing a traceback
    per record (``logging.raiseExceptions``); for the setup before
    :func:`stop_on_log_write_errors` can be called."""
    previous = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        yield
    finally:
        logging.raiseExceptions = previous
