"""A small on-disk cache of converted dataset records.

Records are keyed on the source folder and validated by a SHA-256 digest of the files they
are made from (their names and bytes, see :func:`content_digest`): a changed, added, removed or
renamed file is converted again, a mask edited in place that keeps its size and mtime
included, while everything else loads from one JSON file per folder. The cache is plain JSON,
so loading it runs no code whatever it holds; a file that is not this project's cache (garbage,
a planted pickle) is ignored with a warning and only costs a slower start. Caches of earlier
versions (``.pkl``) are never opened. The cache lives outside the dataset
(``$SEG_PROJECT_CACHE`` or ``~/.cache/seg_project``): the user's data folders are never written
to.
"""

import gc
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

from ..utils.atomic_files import write_bytes

__all__ = ["ConversionCache", "content_digest", "default_cache_dir"]

logger = logging.getLogger(__name__)

# The "format" field of a cache file: anything else is not ours and is ignored.
CACHE_FORMAT = "seg_project conversion cache"
# Files are read for their digest in chunks of this many bytes.
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$SEG_PROJECT_CACHE``, else ``~/.cache/seg_project``."""
    env = os.environ.get("SEG_PROJECT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "seg_project"


def content_digest(paths: Iterable[Path]) -> str:
    """SHA-256 (hex) of the names, sizes and bytes of ``paths``, in the given order.

    Files are read in chunks (about 0.1 s for CoNSeP's 60 MB of training TIFFs).

    Args:
        paths: the files a record is made from.

    Returns:
        str: the digest; any change to a name or a byte changes it.
    """
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    for path in paths:
        path = Path(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            while True:
                count = f.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


class ConversionCache:
    """Converted records of one source folder, one JSON file per folder."""

    def __init__(self, path: Optional[Path], version: Any):
        self.path = path
        self.version = _plain(version)
        self._entries: Dict[str, Tuple[str, Dict]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            self._entries = self._read(path)

    def _read(self, path: Path) -> Dict[str, Tuple[str, Dict]]:
        """The valid entries of the cache file ``path`` (none if it is not ours)."""
        try:
            gc.disable()  # thousands of small dicts: collection passes only cost time here
            stored = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            logger.warning(f"Ignoring unreadable dataset cache {path}: {type(e).__name__}: {e}")
            return {}
        finally:
            gc.enable()
        if not (isinstance(stored, dict) and stored.get("format") == CACHE_FORMAT
                and isinstance(stored.get("entries"), dict)):
            logger.warning(f"Ignoring {path}: not a dataset cache of this project")
            return {}
        if stored.get("version") != self.version:
            return {}  # written by another reader version: converted again, then replaced
        return {name: (entry["digest"], entry["record"])
                for name, entry in stored["entries"].items()
                if isinstance(entry, dict) and isinstance(entry.get("digest"), str)
                and isinstance(entry.get("record"), dict)}

    @classmethod
    def for_source(cls, source: Path, cache_dir=None, version: Any = 0) -> "ConversionCache":
        """The cache of ``source``; ``cache_dir=False`` gives one that stores nothing."""
        if cache_dir is False:
            return cls(None, version)
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        key = hashlib.sha1(str(Path(source).resolve()).encode("utf-8")).hexdigest()[:16]
        stem = f"{Path(source).name}-{key}"
        legacy = root / f"{stem}.pkl"
        if legacy.exists():
            logger.warning(f"Ignoring {legacy}: dataset caches are JSON now and pickles are "
                           "never loaded (you may delete it)")
        return cls(root / f"{stem}.json", version)

    def get(self, name: str, digest: str) -> Optional[Dict]:
        """The stored record of ``name`` if its files still have ``digest``."""
        entry = self._entries.get(name)
        if entry is None or entry[0] != digest:
            return None
        return entry[1]

    def put(self, name: str, digest: str, record: Dict) -> None:
        """Store ``record``, made from files whose :func:`content_digest` is ``digest``."""
        self._entries[name] = (digest, record)
        self._dirty = True

    def save(self) -> None:
        """Write the cache atomically if anything was added (keeps unused entries)."""
        if self.path is None or not self._dirty:
            return
        entries = {name: {"digest": digest, "record": record}
                   for name, (digest, record) in self._entries.items()}
        data = json.dumps({"format": CACHE_FORMAT, "version": self.version, "entries": entries},
                          separators=(",", ":"))
        try:
            write_bytes(self.path, data.encode("utf-8"))
            self._dirty = False
        except OSError as e:
            logger.warning(f"Could not write the dataset cache {self.path}: {e}")
