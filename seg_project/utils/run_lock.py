"""One run at a time in a run folder: the lock file ``OUTPUT_DIR/.lock``.

Two trainings into one folder would interleave ``metrics.json``, overwrite each other's
checkpoints and ``config.yaml``, and a ``--resume`` could delete the other's temporary files.
:func:`run_folder_lock` creates the lock file atomically (``O_EXCL``) holding the owner's pid,
host and start time, refuses a folder whose lock is held by a running process (naming the
folder and the owner), takes over the lock of a process of this host that is no longer
running (a killed run) with a note, and removes the lock when the block ends, also on an error
or a Ctrl-C. A lock written on another host is never taken over (its process cannot be seen
from here): delete it by hand once that run is gone.

On POSIX systems the checks and the creation happen under an ``flock`` of the folder, so that
two runs started at the same moment cannot both take over a stale lock.

Only the standard library is imported here.
"""

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from .atomic_files import naming_target
from .errors import UserInputError
from .run_files import LOCK_FILE

try:
    import fcntl
except ImportError:  # Windows: no guard around the check-and-create
    fcntl = None

__all__ = ["RunFolderInUseError", "run_folder_lock"]


class RunFolderInUseError(UserInputError):
    """Another run holds the run folder's lock."""


def _owner() -> Dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _describe(owner: Dict) -> str:
    return (f"pid {owner.get('pid')} on host {owner.get('host')}, started "
            f"{owner.get('started')}")


def _read(lock: Path) -> Optional[Dict]:
    """The owner a lock file names; None if there is no lock file, {} if it is unreadable."""
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _running_here(pid) -> bool:
    """Whether process ``pid`` of this host is running."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _guarded(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` of ``folder`` (where the platform has one)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _refusal(folder: Path, lock: Path, owner: Dict) -> RunFolderInUseError:
    if not owner:
        return RunFolderInUseError(folder, f"is locked by {lock}, which names no owner: if no "
                                           "run is using this folder, delete that file")
    where = (f" (on another host: if that run is gone, delete {lock})"
             if owner.get("host") != socket.gethostname() else "")
    return RunFolderInUseError(folder, f"another run is using this run folder ({_describe(owner)})"
                                       f"{where}: wait for it to end, or choose another "
                                       "OUTPUT_DIR")


def _acquire(folder: Path) -> Tuple[Dict, Optional[str]]:
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    owner = _owner()
    note = None
    with _guarded(folder):
        held = _read(lock)
        if held is not None:
            if not held or held.get("host") != owner["host"] or _running_here(held.get("pid")):
                raise _refusal(folder, lock, held)
            note = f"Took over {lock}: its run ({_describe(held)}) is no longer running"
            lock.unlink()
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with naming_target(lock), os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(owner, f)
        except BaseException:
            lock.unlink()
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
    return owner, note


def _release(folder: Path, owner: Dict) -> None:
    lock = folder / LOCK_FILE
    with contextlib.suppress(OSError), _guarded(folder):
        if _read(lock) == owner:
            lock.unlink()


@contextlib.contextmanager
def run_folder_lock(folder) -> Iterator[Optional[str]]:
    """Hold the lock of a run folder for the block (created if needed).

    Args:
        folder: the run folder (``OUTPUT_DIR``).

    Yields:
        str or None: a note when a stale lock (of a process of this host that is no longer
        running) was taken over, for the log.

    Raises:
        RunFolderInUseError: a running process (or one on another host) holds the lock; the
            message names the folder and the owner.
        OSError: the folder or the lock file cannot be created.
    """
    folder = Path(folder)
    owner, note = _acquire(folder)
    try:
        yield note
    finally:
        _release(folder, owner)
