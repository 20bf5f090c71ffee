"""The tools' one error style: expected failures as one line, anything else as a traceback.

Every command line (``tools/*.py``) runs its work through :func:`run_tool`. An expected
failure (bad data, a bad config key or value, missing or unfitting weights, an output that
cannot be written) prints ``error: <file or key>: <problem>`` on stderr and exits with
status 2. Anything else is a bug and keeps its traceback. ``--debug`` (any tool) or the
environment variable ``SEG_PROJECT_DEBUG=1`` shows the traceback of expected failures too.
A Ctrl-C prints ``interrupted`` (and what the tool kept, if it says) and exits with status 130.

The tools' shared argparse types live here too (:func:`whole_number_at_least`,
:func:`number_from_0_to_1`).

Only the standard library is imported here, so that light tools stay light.
"""

import argparse
import contextlib
import errno
import os
import re
import sys
from typing import Callable, Iterator, List, Optional, Sequence, Type

from .errors import ConfigError, UserInputError

__all__ = [
    "DEBUG_ENV",
    "DEBUG_FLAG",
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "add_debug_argument",
    "as_user_error",
    "config_error",
    "debug_requested",
    "number_from_0_to_1",
    "run_tool",
    "user_errors",
    "whole_number_at_least",
]

DEBUG_ENV = "SEG_PROJECT_DEBUG"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
DEBUG_FLAG = "--debug"

# Errors of yacs / Detectron2 config merging, recognised by their messages.
_CONFIG_PATTERNS = (
    # merge_from_list: "Non-existent key: SOLVER.EPOCS"; merge_from_file: "Non-existent config
    # key: SOLVER.EPOCS"
    (re.compile(r"^Non-existent (?:config )?key: (?P<key>\S+)$"), "no such config key"),
    (re.compile(r"^Key (?P<key>\S+) was renamed to (?P<new>\S+);"),
     "this config key was renamed to {new}"),
    (re.compile(r"^Type mismatch \((?P<want>.+?) vs\. (?P<got>.+?)\) with values "
                r"\((?P<default>.*) vs\. (?P<value>.*)\) for config key: (?P<key>\S+)$",
                re.DOTALL),
     "expects a value of {want_name} (like {default}), got {value}"),
    (re.compile(r"^Override list has odd length: (?P<list>.*); it must be a list of pairs$",
                re.DOTALL),
     "must come in pairs, got an odd number of words"),
    (re.compile(r"^Config file '(?P<key>.+)' does not exist!$"), "config file not found"),
)

# OSErrors about a path the user named (an output that cannot be written, mostly).
_PATH_ERRNOS = {errno.EEXIST, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR,
                errno.ENOENT, errno.ENOSPC, errno.EROFS, errno.EDQUOT}


def _type_name(text: str) -> str:
    match = re.match(r"<class '(\w+)'>", text)
    return match.group(1) if match else text


def config_error(exc: BaseException) -> Optional[ConfigError]:
    """The :class:`ConfigError` that a yacs/Detectron2 config-merging error means, or None.

    Recognises a misspelled key (``Non-existent key``), a renamed key, a value of the wrong
    type (``Type mismatch``), an odd number of ``KEY VALUE`` overrides and a missing config
    file.

    Args:
        exc: the exception raised by ``merge_from_list`` / ``merge_from_file``.

    Returns:
        ConfigError or None: None when ``exc`` is not one of these.
    """
    if isinstance(exc, ConfigError):
        return exc
    if not isinstance(exc, (KeyError, ValueError, AssertionError)) or not exc.args:
        return None
    message = str(exc.args[0])
    for pattern, problem in _CONFIG_PATTERNS:
        match = pattern.match(message)
        if match:
            fields = match.groupdict()
            key = fields.get("key") or "KEY VALUE overrides"
            if "want" in fields:
                fields["want_name"] = _type_name(fields["want"])
            return ConfigError(key, problem.format(**fields))
    return None


def as_user_error(exc: BaseException, expected: Sequence[Type[BaseException]] = ()
                  ) -> Optional[str]:
    """The one-line message (``<file or key>: <problem>``) of an expected failure, or None.

    Args:
        exc: the exception.
        expected: further exception types that this tool treats as expected (their
            message is used as is).

    Returns:
        str or None: None for an unexpected exception (a bug, to be shown with its traceback).
    """
    if isinstance(exc, UserInputError):
        return str(exc)
    config = config_error(exc)
    if config is not None:
        return str(config)
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, FileExistsError):  # raised with a message naming the path
        return str(exc)
    if expected and isinstance(exc, tuple(expected)):
        return str(exc)
    return None


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """Whether expected failures should show their traceback: ``SEG_PROJECT_DEBUG`` set to
    anything but ``""``/``0``, or ``--debug`` among ``argv``."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return True
    return bool(argv) and DEBUG_FLAG in argv


def add_debug_argument(parser) -> None:
    """Document ``--debug`` in a tool's ``--help`` (:func:`run_tool` handles it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of expected errors too (or set {DEBUG_ENV}=1)")


def _exited_with_user_error(exc: BaseException) -> bool:
    # torch.multiprocessing: a worker that stopped on an expected error (it printed the line
    # itself and exited with status 2).
    return (type(exc).__name__ == "ProcessExitedException"
            and getattr(exc, "exit_code", None) == EXIT_USER_ERROR)


@contextlib.contextmanager
def user_errors(debug: bool = False, expected: Sequence[Type[BaseException]] = ()
                ) -> Iterator[None]:
    """Turn an expected failure inside the block into ``error: ...`` on stderr and
    ``SystemExit(2)``; other exceptions pass unchanged.

    For code that must exit by itself, e.g. a training worker process.

    Args:
        debug: re-raise expected failures too (with their traceback).
        expected: further exception types treated as expected.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - sorted into expected and unexpected below
        message = None if debug else as_user_error(e, expected)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None


def run_tool(main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None,
             expected: Sequence[Type[BaseException]] = (), strip_debug: bool = True) -> int:
    """Run a tool's ``main(argv)`` in the project's error style; return its exit status.

    Args:
        main: the tool's work; takes the argument list, returns an exit status (None: 0).
        argv: the arguments (default ``sys.argv[1:]``).
        expected: further exception types this tool treats as expected failures.
        strip_debug: take ``--debug`` out of ``argv`` before ``main`` sees it (False: ``main``
            parses it itself).

    Returns:
        int: ``main``'s status, 2 after printing ``error: <file or key>: <problem>``, or 130
        after printing ``interrupted[: <what was kept>]`` on a Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    if strip_debug:
        argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        status = main(argv)
    except KeyboardInterrupt as e:
        if debug:
            raise
        sys.stdout.flush()
        print("interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - sorted into expected and unexpected below
        if _exited_with_user_error(e) and not debug:
            return EXIT_USER_ERROR
        message = None if debug else as_user_error(e, expected)
        if message is None:
            raise
        sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return 0 if status is None else int(status)


def whole_number_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum``.

    Args:
        minimum: the smallest value accepted.

    Returns:
        the parser of the option's text (argparse reports its errors as usage errors).
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def number_from_0_to_1(text: str) -> float:
    """An argparse ``type``: a number from 0 to 1 (an opacity, a fraction)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value
