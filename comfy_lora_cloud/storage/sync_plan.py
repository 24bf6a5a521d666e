"""A sync's first step: what it takes to make a prefix mirror a folder, or a folder mirror a
prefix (one listing of the prefix and, where the sizes match, local hashing), shown to the user
before :func:`~.sync.apply` carries it out.

Why it works this way:

* Files are compared by size, then md5 (what GCS and the local store both record), so an
  unchanged tree plans nothing and a second sync costs one listing. Local md5s can be kept in a
  :class:`~.hash_cache.HashCache` keyed by (path, size, mtime_ns), so even hashing is skipped
  next time.
* A mirror with deletes must name a folder below the top level (``datasets/cat/``, never ``""``
  or ``datasets/``): :func:`check_delete_scope` refuses the rest, in planning and again in
  :func:`~.sync.apply`, so no caller can skip it. Asking the user is the caller's part
  (``SyncPlan.deletes`` says what would go).
* Symlinks are followed only when they point inside the folder; keys that would escape the
  folder on pull (``..``, absolute paths) are refused and reported in ``SyncPlan.rejected``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from ..errors import ConfigError, StorageError
from .base import Checksums, ObjectInfo, Storage, clean_key, clean_prefix
from .hash_cache import HashCache
from .landing import PARTIAL
from .layout import TOP_LEVEL
from .local import META_DIR
from .local_tree import iter_local, scan_local

log = logging.getLogger(__name__)


class Transfer(NamedTuple):
    """One file to move: ``rel`` is its path below the folder and below the prefix.

    A named tuple, not a frozen dataclass, which costs twice as much to make: a first upload of
    10,000 files makes 10,000 of them."""

    rel: str
    size: int
    checksums: Checksums | None = None  # of the local file, for uploads


@dataclass
class SyncPlan:
    direction: Literal["push", "pull"]
    local_dir: Path
    prefix: str
    transfers: list[Transfer] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # rel paths to remove from the destination
    skips: list[str] = field(default_factory=list)  # rel paths already identical
    rejected: list[str] = field(default_factory=list)  # names that cannot be synced safely

    @property
    def uploads(self) -> list[Transfer]:
        return self.transfers if self.direction == "push" else []

    @property
    def downloads(self) -> list[Transfer]:
        return self.transfers if self.direction == "pull" else []

    @property
    def bytes(self) -> int:
        return sum(t.size for t in self.transfers)

    @property
    def empty(self) -> bool:
        return not self.transfers and not self.deletes

    def to_dict(self) -> dict[str, object]:
        return {
            "direction": self.direction, "local_dir": str(self.local_dir), "prefix": self.prefix,
            "transfers": len(self.transfers), "bytes": self.bytes, "deletes": len(self.deletes),
            "skips": len(self.skips), "rejected": self.rejected,
        }


def _normalise_prefix(prefix: str) -> str:
    prefix = clean_prefix(prefix)
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def check_delete_scope(prefix: str) -> None:
    """Refuse deleting extras under the whole store or a whole top-level folder.

    ``sync push DIR "" --delete`` would make the bucket mirror one folder, ``datasets/`` would
    drop every dataset, and a pull of ``""`` with delete would empty the local folder of all
    that is not in the bucket. A folder of its own (``datasets/<name>/``, ``models/flux/``) is
    fine."""
    norm = _normalise_prefix(prefix)
    if norm.count("/") >= 2:
        return
    what = "the whole bucket" if not norm else f"everything under {norm}"
    tops = ", ".join(repr(t) for t in ("", "/") + TOP_LEVEL)
    raise ConfigError(
        f"refusing to mirror with deletes over {what}: --delete needs a folder below the top level, "
        f"such as datasets/<name>/ (refused: {tops}, or any other single top-level folder)"
    )


def _same(info: ObjectInfo, c: Checksums) -> bool:
    if info.size != c.size:
        return False
    if info.md5:
        return info.md5 == c.md5
    return info.crc32c == c.crc32c


def valid_rel(rel: str) -> bool:
    try:
        clean_key(rel)
    except ConfigError:
        return False
    return True


def escapes_folder(root: Path, rel: str, memo: dict[str, bool] | None = None) -> bool:
    """True if writing ``root/rel`` would land outside ``root`` (through a symlinked folder).
    ``memo`` remembers the answer per folder for one pass (planning: many files, few folders)."""
    folder = rel.rpartition("/")[0]
    if memo is not None and folder in memo:
        return memo[folder]
    try:
        (root / rel).parent.resolve().relative_to(root.resolve())
        out = False
    except ValueError:
        out = True
    if memo is not None:
        memo[folder] = out
    return out


def plan_push(
    storage: Storage, local_dir: str | os.PathLike[str], prefix: str, *, delete: bool = False,
    cache: HashCache | None = None,
) -> SyncPlan:
    """What it takes to make ``prefix`` mirror ``local_dir`` (one listing of ``prefix``).

    Cheap: a file is hashed only when the destination holds an object of its size that the hash
    cache cannot vouch for; a new or resized file is sent as it is, and the upload hashes the
    bytes it sends (so a first upload reads each file once)."""
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"{root} is not a folder")
    prefix = _normalise_prefix(prefix)
    cache = cache or HashCache()
    remote = {o.key[len(prefix):]: o for o in storage.list(prefix).objects}
    plan = SyncPlan("push", root, prefix)
    transfers, skips = plan.transfers, plan.skips
    lookup = None if cache.empty else cache.lookup  # a new cache knows nothing: ask it nothing
    for f in iter_local(root):
        rel = f.rel
        if "\\" in rel:  # a walk never yields empty, "." or ".." parts; a backslash is the rest
            plan.rejected.append(rel)
            continue
        info = remote.get(rel) if remote else None
        if info is None or info.size != f.size:  # it must go: no need to know its hash yet
            transfers.append(Transfer(rel, f.size, lookup(f.path, f.size, f.mtime_ns) if lookup else None))
            continue
        c = cache.checksums(f.path, f, f.path)
        if _same(info, c):
            skips.append(rel)
        else:
            transfers.append(Transfer(rel, c.size, c))
    if delete:
        check_delete_scope(prefix)
        seen = {t.rel for t in transfers}.union(skips)
        plan.deletes = sorted(set(remote) - seen)
    return plan


def plan_pull(
    storage: Storage, prefix: str, local_dir: str | os.PathLike[str], *, delete: bool = False,
    cache: HashCache | None = None,
) -> SyncPlan:
    """What it takes to make ``local_dir`` mirror ``prefix`` (one listing of ``prefix``)."""
    root = Path(local_dir)
    if root.exists() and not root.is_dir():
        raise StorageError(f"{root} is not a folder")
    prefix = _normalise_prefix(prefix)
    if delete:
        check_delete_scope(prefix)
    cache = cache or HashCache()
    local = {f.rel: f for f in scan_local(root)} if root.is_dir() else {}
    plan = SyncPlan("pull", root, prefix)
    wanted: set[str] = set()
    memo: dict[str, bool] = {}
    for info in storage.list(prefix).objects:
        rel = info.key[len(prefix):]
        if rel.endswith("/") or not rel:  # "folder" placeholder objects
            continue
        unsafe = not valid_rel(rel) or rel.split("/")[0] == META_DIR or rel.split("/")[-1].startswith(PARTIAL)
        if unsafe or escapes_folder(root, rel, memo):
            plan.rejected.append(rel)
            continue
        wanted.add(rel)
        have = local.get(rel)  # hashed only when its size matches and the cache cannot vouch
        if have is not None and have.size == info.size and _same(
                info, cache.checksums(have.path, have, have.path)):
            plan.skips.append(rel)
        else:
            plan.transfers.append(Transfer(rel, info.size))
    if delete:
        plan.deletes = sorted(set(local) - wanted)
    if plan.rejected:
        log.warning("not syncing %d object(s) with unsafe names under %s", len(plan.rejected), prefix)
    return plan
