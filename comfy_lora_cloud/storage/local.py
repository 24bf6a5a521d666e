"""Storage in a local folder with the bucket's layout (the embedded default).

Objects are plain files under ``root/<key>``, so a user can open them in a file browser.
Checksums and generations live in a sidecar folder ``root/.lora-cloud-meta/`` keyed by the
object's size and mtime, so listing does not re-hash unchanged files. Writes go to a temporary
file and are renamed into place, under a lock, so a reader never sees half an object and a
generation precondition is checked atomically.

The temporary file is a hidden partial beside the object (``storage/landing.py:partial_path``),
locked by its writer while it writes. A writer killed mid-way leaves it behind; the next write
into that folder (at most once a minute per folder) and the guard pass (:meth:`LocalStorage.sweep_partials`)
remove the partials no live writer owns (``storage/landing.py:sweep_partials``), never one whose
writer still holds its lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

from ..errors import ChecksumMismatch, ObjectNotFound, PreconditionFailed, StorageError
from .base import (Checksums, Listing, ObjectInfo, checksum_bytes, checksum_file, clean_key, clean_prefix, copy_stream,
                   glob_regex)
from .landing import PARTIAL, landing_file, partial_path, sweep_partials, writing_partial

META_DIR = ".lora-cloud-meta"
SWEEP_EVERY_S = 60.0  # a folder's partials are swept at its first write, then at most this often

try:  # POSIX advisory lock between processes; threads use the in-process lock too
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LocalStorage:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        self._lock = threading.RLock()
        self._swept: dict[Path, float] = {}  # folder -> when its partials were last swept (monotonic)
        try:
            (self.root / META_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create storage folder {self.root}: {exc.strerror}") from None

    # ---- helpers ----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        p = self.root / clean_key(key)
        # belt and braces against symlinks pointing out of the root
        try:
            p.resolve().relative_to(self.root)
        except ValueError:
            raise StorageError(f"object {key!r} resolves outside the storage folder") from None
        return p

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / (clean_key(key) + ".json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:
                yield
                return
            with open(self.root / META_DIR / ".lock", "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _info(self, key: str, path: Path) -> ObjectInfo:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.url}")
        return self._info_for(key, st, lambda: checksum_file(path))

    def _info_for(self, key: str, st: os.stat_result, hash_now) -> ObjectInfo:
        """Metadata for the file ``st`` describes. The sidecar counts only when it was written for
        this very file (size, mtime and inode: a rewrite is a new inode, even within one
        timestamp tick); otherwise the file is hashed once and the sidecar renewed."""
        meta = self._read_meta(key)
        if meta and _same_file(meta, st):
            return ObjectInfo(key, st.st_size, meta["md5"], meta["crc32c"], meta.get("generation", st.st_mtime_ns),
                              st.st_mtime)
        c = hash_now()  # outside the lock: hashing a big file must not hold up writers
        with self._locked():
            # a writer may have committed between our look and now (its replace comes before its
            # sidecar): its sidecar wins, and ours is written only for the file we hashed
            meta = self._read_meta(key)
            if meta and _same_file(meta, st):
                return ObjectInfo(key, st.st_size, meta["md5"], meta["crc32c"],
                                  meta.get("generation", st.st_mtime_ns), st.st_mtime)
            generation = st.st_mtime_ns
            try:
                now = self._path(key).stat()
            except OSError:
                now = None
            if now is not None and (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size,
                                                                                   st.st_mtime_ns):
                self._write_meta(key, st, c, generation)
        return ObjectInfo(key, st.st_size, c.md5, c.crc32c, generation, st.st_mtime)

    def _read_meta(self, key: str) -> dict | None:
        try:
            return json.loads(self._meta_path(key).read_text())
        except (OSError, ValueError):
            return None

    def _write_meta(self, key: str, st: os.stat_result, c: Checksums, generation: int) -> None:
        mp = self._meta_path(key)
        try:
            mp.parent.mkdir(parents=True, exist_ok=True)
            tmp = mp.with_name(mp.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
                                       "md5": c.md5, "crc32c": c.crc32c, "generation": generation}))
            os.replace(tmp, mp)
        except OSError:
            pass  # the cache is an optimisation only

    def _generation(self, key: str, path: Path) -> int:
        """0 when missing (GCS's convention for "must not exist")."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return 0
        meta = self._read_meta(key)
        return meta.get("generation", st.st_mtime_ns) if meta and _same_file(meta, st) else st.st_mtime_ns

    def _check_generation(self, key: str, path: Path, if_generation_match: int | None) -> None:
        if if_generation_match is None:
            return
        current = self._generation(key, path)
        if current != if_generation_match:
            raise PreconditionFailed(
                f"object {key!r} changed (generation {current}, expected {if_generation_match})"
            )

    def _commit(self, key: str, tmp: Path, final: Path, c: Checksums, if_generation_match: int | None) -> ObjectInfo:
        with self._locked():
            self._check_generation(key, final, if_generation_match)
            if final.is_dir():
                raise StorageError(f"cannot write {key!r}: a folder of that name exists")
            previous = self._generation(key, final)
            os.replace(tmp, final)
            st = final.stat()
            # unique and increasing, even for two writes within one timestamp tick
            generation = max(time.time_ns(), st.st_mtime_ns, previous + 1)
            self._write_meta(key, st, c, generation)
        return ObjectInfo(key, c.size, c.md5, c.crc32c, generation, st.st_mtime)

    def _tmp_for(self, final: Path) -> Path:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(f"cannot create {final.parent.name!r}: an object of that name exists") from None
        now = time.monotonic()
        if now - self._swept.get(final.parent, float("-inf")) >= SWEEP_EVERY_S:
            self._swept[final.parent] = now
            sweep_partials(final.parent)  # what a killed writer left in this folder
        return partial_path(final)

    def sweep_partials(self, prefix: str = "") -> list[str]:
        """Remove the partials that no live writer owns (killed uploads) in every folder under
        ``prefix``; returns their paths under the root. The guard pass calls it."""
        base = self.root / clean_prefix(prefix).rstrip("/") if clean_prefix(prefix) else self.root
        removed: list[str] = []
        for dirpath, dirnames, _files in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != META_DIR and not os.path.islink(os.path.join(dirpath, d))]
            removed += [path.relative_to(self.root).as_posix() for path in sweep_partials(Path(dirpath))]
        return sorted(removed)

    # ---- Storage protocol --------------------------------------------------------------------
    def stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "", delimiter: str | None = None, *, match_glob: str | None = None) -> Listing:
        prefix = clean_prefix(prefix)
        wanted = glob_regex(match_glob) if match_glob else None
        objects: list[ObjectInfo] = []
        prefixes: set[str] = set()
        # start walking at the deepest folder the prefix names
        base_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / base_rel if base_rel else self.root
        if not base.is_dir():
            return Listing([], [])
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = sorted(
                d for d in dirnames
                if d != META_DIR and not os.path.islink(os.path.join(dirpath, d))
            )
            for name in sorted(filenames):
                if name.startswith(PARTIAL) or (rel_dir == "" and name.startswith(".lora-cloud")):
                    continue
                key = rel_dir + name
                if not key.startswith(prefix) or (wanted is not None and not wanted.match(key)):
                    continue
                full = Path(dirpath) / name
                if full.is_symlink():
                    continue
                if delimiter:
                    rest = key[len(prefix):]
                    if delimiter in rest:
                        prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                        continue
                with contextlib.suppress(ObjectNotFound):
                    objects.append(self._info(key, full))
        objects.sort(key=lambda o: o.key)
        return Listing(objects, sorted(prefixes))

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:  # one descriptor: a concurrent rewrite cannot mix two files
                st = os.fstat(f.fileno())
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
        got = checksum_bytes(data)
        info = self._info_for(key, st, lambda: got)
        if got.md5 != info.md5:
            raise ChecksumMismatch(f"object {key!r} is corrupt: its bytes do not match the recorded md5")
        return data

    def write_bytes(self, key, data, *, if_generation_match=None, content_type=None, metadata=None) -> ObjectInfo:
        final = self._path(key)
        tmp = self._tmp_for(final)
        try:
            with writing_partial(tmp) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return self._commit(key, tmp, final, checksum_bytes(data), if_generation_match)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def upload_file(self, path, key, *, if_generation_match=None, content_type=None, checksums=None) -> ObjectInfo:
        final = self._path(key)
        tmp = self._tmp_for(final)
        try:
            with open(path, "rb") as src, writing_partial(tmp) as dst:
                c = copy_stream(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            if checksums is not None and (checksums.md5 != c.md5 or checksums.size != c.size):
                raise ChecksumMismatch(f"{path} changed while it was being uploaded")
            return self._commit(key, tmp, final, c, if_generation_match)
        except FileNotFoundError:
            raise StorageError(f"local file {path} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot upload {path} to {key!r}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def download_file(self, key, path, *, fsync: bool = True) -> ObjectInfo:
        src_path = self._path(key)
        dest = Path(path)
        try:
            with open(src_path, "rb") as src, landing_file(dest, fsync=fsync) as dst:
                st = os.fstat(src.fileno())
                c = copy_stream(src, dst)
                info = self._info_for(key, st, lambda: c)
                if c.md5 != info.md5:
                    raise ChecksumMismatch(f"object {key!r} is corrupt: its bytes do not match the recorded md5")
            return info
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot download {key!r} to {dest}: {exc.strerror or exc}") from None

    def delete(self, key, *, if_generation_match=None) -> None:
        path = self._path(key)
        with self._locked():
            if not path.is_file():
                raise ObjectNotFound(f"no object {key!r} in {self.url}")
            self._check_generation(key, path, if_generation_match)
            path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self._meta_path(key).unlink()
        self._prune_empty(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        prefix = clean_prefix(prefix)
        if not prefix:
            raise StorageError("refusing to delete the whole bucket")
        n = 0
        for obj in self.list(prefix).objects:
            with contextlib.suppress(ObjectNotFound):
                self.delete(obj.key)
                n += 1
        base = self.root / prefix.rstrip("/")
        if prefix.endswith("/") and base.is_dir() and not any(base.iterdir()):
            shutil.rmtree(base, ignore_errors=True)
        return n

    def _prune_empty(self, folder: Path) -> None:
        while folder != self.root and folder.is_dir():
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _same_file(meta: dict, st: os.stat_result) -> bool:
    return (meta.get("size") == st.st_size and meta.get("mtime_ns") == st.st_mtime_ns
            and meta.get("ino", st.st_ino) == st.st_ino)
