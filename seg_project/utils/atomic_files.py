"""The project's one way to write an output file: a temporary file beside the target, flushed
to disk, then renamed over it.

A failure or a kill at any moment leaves, at each target, either the earlier file or the
complete new one, and no partial file behind (a rename is atomic, one file at a time). New
files get the usual permissions (not ``mkstemp``'s 0600); a replaced file keeps its mode. Used
for checkpoints, the conversion cache, submissions, pictures, figures, tables and generated
datasets.
"""

import os
import tempfile
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

from .errors import DatasetError

__all__ = ["atomic_write", "atomic_write_many", "prepare_out_dir", "remove_stale_temporaries",
           "write_bytes", "write_text"]

Writer = Callable[[str], None]


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


def _write_temp(path: Path, write: Writer) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
    os.close(fd)
    temp = Path(name)
    try:
        write(name)
        with open(name, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(temp, _file_mode(path))
    except BaseException:
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
