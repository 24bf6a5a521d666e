"""The files below a local folder as a sync sees them: one ``stat`` each, in a stable order,
symlinks followed only while they stay inside the folder, the local store's metadata folder and
partial files left out."""

from __future__ import annotations

import logging
import operator
import os
import stat
from pathlib import Path
from typing import Iterator, NamedTuple

from .landing import PARTIAL
from .local import META_DIR

log = logging.getLogger(__name__)


class LocalFile(NamedTuple):
    """A regular file below a sync's folder, as one ``stat`` saw it: its size and mtime, not the
    ``stat`` result (one object fewer per file for the garbage collector to count: planning
    10,000 files set off full collections). ``st_size`` and ``st_mtime_ns`` let it stand in
    for the ``stat`` result where :class:`HashCache` wants one."""

    rel: str  # below the folder, ``/``-separated
    path: str  # absolute, below the folder's resolved path (the hash cache's key)
    size: int
    mtime_ns: int

    @property
    def st_size(self) -> int:
        return self.size

    @property
    def st_mtime_ns(self) -> int:
        return self.mtime_ns


def scan_local(root: Path) -> list[LocalFile]:
    """Regular files below ``root`` in a stable order, one ``stat`` each (``os.scandir``: the
    cheap walk planning needs). Symlinks are followed only when they stay inside the folder;
    symlinked folders, the local store's metadata folder and partial files are skipped."""
    return list(iter_local(root))


def iter_local(root: Path) -> Iterator[LocalFile]:
    """:func:`scan_local`, one file at a time (a first upload's plan keeps none of them)."""
    root_s = str(root.resolve())
    stack = [(root_s, "")]  # folders still to read, the next one last
    is_reg = stat.S_ISREG
    while stack:
        folder, rel_dir = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=_entry_name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):  # a real folder (a symlinked one is below)
                    if name != META_DIR:
                        subdirs.append((entry.path, rel_dir + name + "/"))
                    continue
                if name.startswith(PARTIAL):
                    continue
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if os.path.commonpath([target, root_s]) != root_s:
                        log.info("skipping symlink leaving the folder: %s", entry.path)
                        continue
                    st = entry.stat()  # follows a symlink that stays inside (to a folder: not regular)
                else:
                    st = os.lstat(entry.path)  # not entry.stat(): it would keep the result with the entry
            except (OSError, ValueError):
                continue
            if is_reg(st.st_mode):
                yield LocalFile(rel_dir + name, entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))


_entry_name = operator.attrgetter("name")


def local_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(rel, path) of regular files below ``root``; symlinks only if they stay inside it."""
    for f in scan_local(Path(root)):
        yield f.rel, Path(f.path)
