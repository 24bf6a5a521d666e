"""Local checksums remembered between syncs, so an unchanged file is not hashed again.

A sync compares files by size, then md5; the md5 of a local file is kept here, keyed by
(absolute path, size, mtime_ns), so a second sync of an unchanged tree reads no file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .base import Checksums, checksum_file

if TYPE_CHECKING:
    from .local_tree import LocalFile

log = logging.getLogger(__name__)


class HashCache:
    """Remembers local checksums by (absolute path, size, mtime_ns) in a small JSON file.

    Thread-safe; :meth:`save` writes atomically. A changed file (new size or mtime) misses, and
    only then is it hashed (:meth:`checksums`); :meth:`lookup` never hashes.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, list] = {}
        self._dirty = False
        if self.path and self.path.is_file():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(self.path.read_text())
                if isinstance(data, dict):
                    self._data = data

    @property
    def empty(self) -> bool:
        """Nothing remembered (yet): a lookup would miss."""
        return not self._data

    def reload(self) -> None:
        """Take in what another process saved to the file (entries here stay)."""
        if not self.path or not self.path.is_file():
            return
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                with self._lock:
                    for key, value in data.items():
                        self._data.setdefault(key, value)

    def lookup(self, key: str, size: int, mtime_ns: int) -> Checksums | None:
        """The checksums remembered for the file at absolute path ``key`` with this size and
        mtime, or None (nothing is read)."""
        hit = self._data.get(key)  # one dict read: atomic, no lock needed
        if isinstance(hit, list) and len(hit) == 4 and hit[0] == size and hit[1] == mtime_ns:
            return Checksums(size, hit[2], hit[3])
        return None

    def checksums(self, file: Path | str, st: "os.stat_result | LocalFile | None" = None,
                  key: str | None = None) -> Checksums:
        """The file's checksums: remembered, or computed now (and remembered). ``st`` and ``key``
        (its absolute resolved path) save the calls when the caller has them."""
        st = st or os.stat(file)
        key = key or str(Path(file).resolve())
        hit = self.lookup(key, st.st_size, st.st_mtime_ns)
        if hit is not None:
            return hit
        c = checksum_file(file)
        self.put(key, st, c)
        return c

    def remember(self, file: Path, c: Checksums, st: os.stat_result | None = None) -> None:
        """Record ``c`` for ``file`` as ``st`` describes it (default: as it is now)."""
        self.put(str(file.resolve()), st or file.stat(), c)

    def put(self, key: str, st: "os.stat_result | LocalFile", c: Checksums) -> None:
        with self._lock:
            self._data[key] = [st.st_size, st.st_mtime_ns, c.md5, c.crc32c]
            self._dirty = True

    def save(self) -> None:
        if not self.path or not self._dirty:
            return
        with self._lock:
            payload = json.dumps(self._data)
            self._dirty = False
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(payload)
            os.replace(tmp, self.path)
        except OSError as exc:
            # only a cache: a read-only or full home costs the next sync a re-hash, never the
            # transfer that just succeeded
            log.warning("could not save the checksum cache %s: %s", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
