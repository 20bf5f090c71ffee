"""Checks of input files and output paths, made before any work starts."""

import os
from pathlib import Path

from .errors import DatasetError

__all__ = ["check_output_dir", "check_output_file", "require_file"]


def require_file(path) -> Path:
    """``path`` as a ``Path`` if it names an existing, non-empty file.

    Raises:
        DatasetError: missing, a folder, or empty (0 bytes).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "file not found")
    if not path.is_file():
        raise DatasetError(path, "is not a file")
    if os.path.getsize(path) == 0:
        raise DatasetError(path, "is empty (0 bytes)")
    return path


def _check_creatable(path: Path, what: str) -> None:
    """The nearest existing folder above ``path`` is a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DatasetError(parent, f"is a file, not a folder: cannot create the {what} {path}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DatasetError(parent, f"folder not writable: cannot create the {what} {path}")


def check_output_file(path, overwrite: bool = False, what: str = "output file") -> Path:
    """Check, before any work, that ``path`` can be written as a file.

    Args:
        path: the file to be written.
        overwrite: whether an existing file may be replaced.
        what: how to name it in errors.

    Returns:
        Path: ``path``.

    Raises:
        DatasetError: ``path`` is a folder, exists without ``overwrite``, or a folder above
            it is a file or not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(path, f"the {what} is an existing folder")
    if path.exists():
        if not overwrite:
            raise DatasetError(path, f"the {what} exists; pass --overwrite to replace it")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise DatasetError(path.parent, f"folder not writable: cannot replace the {what} "
                                            f"{path}")
        return path
    _check_creatable(path, what)
    return path


def check_output_dir(path, what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` is a writable folder or can be created as one.

    Args:
        path: the folder to be written into.
        what: how to name it in errors.

    Returns:
        Path: ``path``.

    Raises:
        DatasetError: ``path`` (or a folder above it) is a file, or it cannot be written.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise DatasetError(path, f"the {what} is an existing file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise DatasetError(path, f"the {what} is not writable")
        return path
    _check_creatable(path, what)
    return path
