"""A small on-disk cache of converted dataset records.

Records are keyed on the source folder and validated by a signature of its files (names,
sizes, mtimes), so a changed, added or removed file is re-read while everything else loads
from one pickle. The cache lives outside the dataset (``$SEG_PROJECT_CACHE`` or
``~/.cache/seg_project``): the user's data folders are never written to.
"""

import gc
import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..utils.atomic_files import write_bytes

__all__ = ["ConversionCache", "default_cache_dir", "folder_signature"]

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$SEG_PROJECT_CACHE``, else ``~/.cache/seg_project``."""
    env = os.environ.get("SEG_PROJECT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "seg_project"


def folder_signature(folder: Path) -> Tuple:
    """(name, size, mtime_ns) of every file directly in ``folder``, sorted by name."""
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_file():
                stat = entry.stat()
                entries.append((entry.name, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class ConversionCache:
    """Converted records of one source folder, one pickle file per folder and version."""

    def __init__(self, path: Optional[Path], version: Any):
        self.path = path
        self.version = version
        self._entries: Dict[str, Tuple[Tuple, Dict]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                gc.disable()  # thousands of small dicts: collection passes only cost time here
                with open(path, "rb") as f:
                    stored = pickle.load(f)
                if stored.get("version") == version:
                    self._entries = stored["entries"]
            except Exception as e:  # a broken cache is only a slower start
                logger.warning(f"Ignoring unreadable dataset cache {path}: {e}")
            finally:
                gc.enable()

    @classmethod
    def for_source(cls, source: Path, cache_dir=None, version: Any = 0) -> "ConversionCache":
        """The cache of ``source``; ``cache_dir=False`` gives one that stores nothing."""
        if cache_dir is False:
            return cls(None, version)
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        key = hashlib.sha1(str(Path(source).resolve()).encode("utf-8")).hexdigest()[:16]
        return cls(root / f"{Path(source).name}-{key}.pkl", version)

    def get(self, name: str, signature: Tuple) -> Optional[Dict]:
        """The stored record of ``name`` if its files still have ``signature``."""
        entry = self._entries.get(name)
        if entry is None or entry[0] != signature:
            return None
        return entry[1]

    def put(self, name: str, signature: Tuple, record: Dict) -> None:
        self._entries[name] = (signature, record)
        self._dirty = True

    def save(self) -> None:
        """Write the cache atomically if anything was added (keeps unused entries)."""
        if self.path is None or not self._dirty:
            return
        try:
            data = pickle.dumps({"version": self.version, "entries": self._entries},
                                protocol=pickle.HIGHEST_PROTOCOL)
            write_bytes(self.path, data)
            self._dirty = False
        except OSError as e:
            logger.warning(f"Could not write the dataset cache {self.path}: {e}")
