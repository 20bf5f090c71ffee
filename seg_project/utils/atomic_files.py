"""The project's one way to write an output file: a temporary file beside the target, flushed
to disk, then renamed over it.

A failure or a kill at any moment leaves, at each target, either the earlier file or the
complete new one, and no partial file behind (a rename is atomic, one file at a time). New
files get the usual permissions (not ``mkstemp``'s 0600); a replaced file keeps its mode. Used
for checkpoints, the conversion cache, submissions, pictures, figures, tables and generated
datasets. A write that fails (a full disk, no permission) raises an ``OSError`` that names the
target, not the temporary file, so that the tools' one error line names it
(:mod:`seg_project.utils.cli`); :func:`naming_target` does the same for files written in place
as they grow (a log, ``metrics.json``).

The many files of one run (e.g. ``tools/predict.py``'s exports) go through
:class:`OutputStaging`: written into a temporary folder inside the output folder and moved
into place only once all are done, so that a failure or a Ctrl-C before then leaves none of
them.
"""

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import DatasetError

__all__ = ["OutputStaging", "atomic_write", "atomic_write_many", "naming_target",
           "prepare_out_dir", "remove_stale_temporaries", "write_bytes", "write_text"]

Writer = Callable[[str], None]
# Errors that are always the written file's (shutil.copyfile names its source in them).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def prepare_out_dir(out_dir) -> Path:
    """``out_dir`` as a ``Path``, created if needed.

    Args:
        out_dir: the output folder.

    Returns:
        Path: ``out_dir``.

    Raises:
        DatasetError: the path exists and is not a folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(out_dir, "the output path exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


_TEMP_SUFFIX = ".tmp"


def remove_stale_temporaries(folder, names: Sequence[str]) -> List[Path]:
    """Delete the temporary files that a killed writer left beside these targets.

    A kill (SIGKILL, power loss) between creating a temporary file and renaming it over its
    target leaves ``.<name>.<random>.tmp`` behind; the target itself is whole (old or new).
    Call this only where no other process writes to ``folder`` (e.g. a run folder under its
    lock, before resuming).

    Args:
        folder: the folder of the targets.
        names: the targets' file names, or shell patterns of them (e.g. ``"model_*.pth"``).

    Returns:
        The deleted files.
    """
    removed = []
    for name in names:
        for temp in Path(folder).glob(f".{name}.*{_TEMP_SUFFIX}"):
            if temp.is_file():
                temp.unlink(missing_ok=True)
                removed.append(temp)
    return removed


def _file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _naming_target(error: OSError, path: Path, temp: Optional[Path]) -> OSError:
    """The same error naming ``path``, the file that could not be written, if it is about
    writing (a full disk, or no file or only the temporary one named); else ``error`` as
    raised (e.g. a source file that cannot be read)."""
    if error.errno is None:
        return error
    names = {str(name) for name in (error.filename, error.filename2) if name is not None}
    if not (error.errno in _WRITE_ERRNOS or not names or (temp is not None
                                                          and str(temp) in names)):
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


@contextlib.contextmanager
def naming_target(path) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block that names no file (as a failed write to an open
    file raises, e.g. on a full disk) naming ``path``: for files written in place as they
    grow (a log, ``metrics.json``).

    Args:
        path: the file the block writes.
    """
    try:
        yield
    except OSError as e:
        if e.errno is None or e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


def _write_temp(path: Path, write: Writer) -> Path:
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
        os.close(fd)
        temp = Path(name)
        write(name)
        with open(name, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(temp, _file_mode(path))
    except OSError as e:
        if temp is not None:
            temp.unlink(missing_ok=True)
        named = _naming_target(e, path, temp)
        if named is e:
            raise
        raise named from e
    except BaseException:
        if temp is not None:
            temp.unlink(missing_ok=True)
        raise
    return temp


def atomic_write_many(targets: Sequence[Tuple[object, Writer]]) -> List[Path]:
    """Write several files, replacing none of them until all are completely written.

    Every file is first written to a temporary file beside its target and flushed to disk;
    only then are the temporary files renamed over their targets, one after another. Each
    rename is atomic, but the renames together are not: a failure or a kill while writing
    leaves every target as it was, while one between two renames leaves the targets renamed
    so far new and the others old (never a partial file). No temporary file is left behind,
    except after a kill.

    Args:
        targets: ``(path, write)`` pairs, renamed in this order; ``write(temp_path)`` must
            create the file's content at ``temp_path`` (any writer that takes a path:
            ``Path.write_bytes``, ``torch.save``, ``tifffile.imwrite``, ``Figure.savefig``...).

    Returns:
        list[Path]: the written paths.
    """
    paths = [Path(p) for p, _ in targets]
    temps: List[Path] = []
    try:
        for path, (_, write) in zip(paths, targets):
            temps.append(_write_temp(path, write))
        for path, temp in zip(paths, temps):
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return paths


def atomic_write(path, write: Writer) -> Path:
    """Write one file atomically.

    Args:
        path: the file to write (its folder is created if needed).
        write: ``write(temp_path)`` creates the content at ``temp_path``.

    Returns:
        Path: ``path``.
    """
    return atomic_write_many([(path, write)])[0]


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: the file to write.
        data: its content.

    Returns:
        Path: ``path``.
    """
    return atomic_write(path, lambda temp: Path(temp).write_bytes(data))


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: the file to write.
        text: its content.

    Returns:
        Path: ``path``.
    """
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back until the block is done, then raise it."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class OutputStaging:
    """The new files of one run, written into a temporary folder inside ``out_dir`` and moved
    into place together at the end.

    Until :meth:`commit`, ``out_dir`` holds nothing new: leaving the ``with`` block without a
    commit (an error, a Ctrl-C) deletes the staging folder, and the folders made for
    ``out_dir`` if they are still empty. :meth:`commit` moves every staged file over its
    target (renames within one file system) with Ctrl-C held back until all are moved::

        with OutputStaging(out) as staging:
            write_text(staging.folder / "a.json", ...)
            staging.commit()

    Attributes:
        out_dir: the output folder.
        folder: the staging folder (``<out_dir>/.staging-*.tmp``), inside the block.
        committed: whether :meth:`commit` has moved the files into place.
    """

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.folder: Optional[Path] = None
        self.committed = False
        self._created: List[Path] = []

    def __enter__(self) -> "OutputStaging":
        missing, folder = [], self.out_dir.absolute()
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        prepare_out_dir(self.out_dir)
        self._created = missing  # the deepest first
        self.folder = Path(tempfile.mkdtemp(prefix=".staging-", suffix=".tmp",
                                            dir=self.out_dir))
        return self

    def target(self, staged) -> Path:
        """The final path of a file written at ``staged`` (a path inside :attr:`folder`)."""
        return self.out_dir / Path(staged).relative_to(self.folder)

    def commit(self, remove: Iterable = ()) -> None:
        """Move every staged file into place, then delete the files of ``remove`` (outputs of
        an earlier run that the new ones make stale)."""
        staged = sorted(p for p in self.folder.rglob("*") if p.is_file())
        with _interrupts_deferred():
            for path in staged:
                target = self.target(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_file():
                    os.chmod(path, _file_mode(target))  # a replaced file keeps its mode
                os.replace(path, target)
            for path in remove:
                Path(path).unlink(missing_ok=True)
            self.committed = True

    def __exit__(self, exc_type, error, traceback) -> bool:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        if not self.committed:
            for folder in self._created:
                try:
                    folder.rmdir()
                except OSError:
                    break
        staged = self._staged_name(error)
        if staged is not None:  # name the output file, not its staged copy
            raise OSError(error.errno, error.strerror, str(self.target(staged))) from error
        return False

    def _staged_name(self, error) -> Optional[Path]:
        """The staged file an ``OSError`` names, if it names one."""
        if not isinstance(error, OSError) or error.errno is None or error.filename is None:
            return None
        path = Path(os.fsdecode(error.filename))
        return path if self.folder is not None and self.folder in path.parents else None
