"""Datasets and LoRAs in storage: list, upload, download, delete.

The one home of each transfer, whichever edge asks for it:

* a dataset upload is :func:`upload_dataset` (``dataset upload``, the Save Dataset node,
  ``dataset prepare``'s publish step);
* a dataset download is :func:`download_dataset` (``dataset download``, Load Images from a
  dataset, ``dataset prepare``/``validate`` from storage);
* a LoRA download is :func:`download_lora` (``lora download``, the sidebar's route, Await LoRA
  through ``runs.fetch_lora``, the Cloud LoRA Loader);
* "may this dataset be trained" is :func:`require_trainable` (``train start``/``plan``, the
  Launch node and quick launch, all through ``runs.start_run``).

Why datasets are written the way they are:

* The manifest (``dataset.json``) is written last, and removed first before a dataset that has
  one is changed; so a dataset whose manifest exists is complete, and one without (an upload
  that was killed) is listed with ``complete: false`` and cannot be trained.
* One writer at a time: an upload holds a lease (:mod:`~comfy_lora_cloud.storage.lock`) on
  ``datasets/<name>/``; a second upload fails naming the first, a killed one's lease is taken
  over, and the same folder uploaded again by the same machine finishes what it started.
* Writing into an existing dataset needs a word: replace (it becomes exactly the folder) or
  merge (the folder's files are added); uploading the very same files again changes nothing
  and needs neither. A dataset a live run trains on is not changed unless forced
  (:mod:`.dataset_use`).

The functions block, over a :class:`~comfy_lora_cloud.storage.Storage`; :class:`Library`, the
app's service for every edge, runs them in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any, Callable, Literal, TYPE_CHECKING

from ...errors import ConfigError, CorruptRecord, DatasetError, DatasetExists, DatasetInUse, ObjectNotFound, StorageError
from ...models import MAX_TRIGGER, Dataset, Listed, Lora, Problem, check_trigger, validate_name
from ...storage import Storage, sweep_partials
from ...storage import layout
from ...storage import lock as leases
from ...storage import sync
from . import offload
from ...storage.base import ObjectInfo, checksum_file, parse_json_record, read_json_record
from ...storage.layout import CAPTION_SUFFIX, IMAGE_SUFFIXES, MANIFEST, is_dataset_file, is_image
from ...dataset.load import check_image_files

if TYPE_CHECKING:
    from ..core import Core

__all__ = [
    "IMAGE_SUFFIXES", "COMFY_LORA_FOLDER", "Library", "comfy_lora_folder", "delete_dataset", "delete_lora",
    "describe_dataset", "download_dataset", "download_lora", "is_dataset_file", "list_datasets", "list_loras",
    "require_trainable", "upload_dataset",
]

log = logging.getLogger(__name__)

Progress = Callable[[Any], None]  # receives storage.sync.Progress events
# Bucket content is untrusted input (a rented host can write it): a listing reads each entry on
# its own, skips one it cannot read and reports it in ``problems``; it never fails as a whole.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_SIDECAR_BYTES = 1024 * 1024
MAX_CAPTION_BYTES = 64 * 1024  # a caption is a line or two; a bigger .txt is not read
MAX_LORA_READ_BYTES = 4 * 1024**3  # a safetensors header needs the whole file (no ranged read): cap it
LORA_TYPES = ("character", "style", "concept")
#: where ComfyUI finds the LoRAs this pack downloads: ``models/loras/lora_cloud/``
COMFY_LORA_FOLDER = "lora_cloud"
UPLOAD_REMEDY = ("pass --replace to make it exactly this folder (files it lacks are deleted), or --merge to add "
                 "this folder's files to it")


# ---- datasets: reading -----------------------------------------------------------------------
def _servable(name: str) -> bool:
    """A file name the image routes would accept (others are left out of image lists)."""
    from .files import check_file_name

    try:
        check_file_name(name)
    except ConfigError:
        return False
    return True


def _caption_key(key: str) -> str:
    return key.rsplit(".", 1)[0] + CAPTION_SUFFIX


def _manifest_fields(storage: Storage, key: str) -> tuple[str | None, str | None]:
    """``trigger`` and ``lora_type`` from a dataset manifest (top level or under ``settings``),
    read as untrusted input (size-capped, typed); :class:`CorruptRecord` when it is not one."""
    return _parse_manifest_fields(read_json_record(storage, key, MAX_MANIFEST_BYTES), key)


def _manifest_fields_of(data: bytes, key: str) -> tuple[str | None, str | None]:
    """:func:`_manifest_fields` of bytes already read (a listing's parallel reads)."""
    return _parse_manifest_fields(parse_json_record(data, key), key)


def _parse_manifest_fields(manifest: Any, key: str) -> tuple[str | None, str | None]:
    if not isinstance(manifest, dict):
        raise CorruptRecord(f"{key} is not a JSON object")
    settings = manifest.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise CorruptRecord(f"{key}: settings is not a JSON object")
    trigger = manifest.get("trigger") or settings.get("trigger") or None
    lora_type = manifest.get("lora_type") or settings.get("lora_type") or None
    if trigger is not None and not (isinstance(trigger, str) and len(trigger) <= MAX_TRIGGER
                                    and trigger.isprintable()):
        raise CorruptRecord(f"{key}: trigger is not a short line of text")
    if lora_type is not None and lora_type not in LORA_TYPES:
        raise CorruptRecord(f"{key}: lora_type is not one of {', '.join(LORA_TYPES)}")
    return trigger, lora_type


_UNREAD: Any = object()


def _summarise(storage: Storage, name: str, objs: list[ObjectInfo],
               problems: list[Problem] | None = None, manifest: Any = _UNREAD) -> tuple[Dataset, str | None]:
    """The dataset record for the objects under its prefix, and why it is not complete (None if
    it is). ``objs`` may include the upload lease; it counts for nothing. A manifest that cannot
    be read makes the dataset incomplete and, when ``problems`` is given, is reported there.
    ``manifest``: what a listing's parallel read gave (a :class:`~.listings.Read`), else it is
    read here."""
    prefix = layout.dataset_prefix(name)
    files = [o for o in objs if is_dataset_file(o.key[len(prefix):])]
    images = [o for o in files if is_image(o.key)]
    captions = {o.key for o in files if o.key.endswith(CAPTION_SUFFIX) and o.size > 0}
    trigger = lora_type = None
    why: str | None = None
    if not any(o.key == prefix + MANIFEST for o in files):
        lease = any(o.key == prefix + layout.DATASET_LOCK for o in objs)
        why = (f"it has no {MANIFEST}: an upload is writing it now, or one was interrupted" if lease else
               f"it has no {MANIFEST}: its upload did not finish, or it was copied without `lora-cloud dataset "
               "upload`")
    else:
        try:
            if manifest is _UNREAD:
                trigger, lora_type = _manifest_fields(storage, prefix + MANIFEST)
            elif manifest.error is not None:
                raise manifest.error
            else:
                trigger, lora_type = manifest.value
        except CorruptRecord as exc:
            why = f"its {MANIFEST} cannot be read ({exc.message})"
            if problems is not None:
                problems.append(Problem.of(prefix + MANIFEST, exc))
        except ObjectNotFound:  # deleted between the listing and the read: a writer is at work
            why = f"its {MANIFEST} was removed while we looked: an upload is writing it now"
    d = Dataset(
        name=name,
        images=len(images),
        bytes=sum(o.size for o in files),
        captioned=sum(1 for o in images if _caption_key(o.key) in captions),
        trigger=trigger,
        lora_type=lora_type,
        updated=max((o.updated or 0 for o in files), default=0) or None,
        complete=why is None,
    )
    return d, why


def list_datasets(storage: Storage, page: Any = None, *, workers: int = 16) -> Listed[Dataset]:
    """Datasets, complete or not, by name, from one paged listing of ``datasets/`` (counts from
    the object names); only the ``page`` shown (a :class:`~.listings.Page`, default all) has its
    manifest read, in parallel and remembered by generation (:mod:`.listings`). A folder whose
    name we would never write, or one that cannot be read, is skipped and reported in
    ``problems``; ``total`` counts the datasets of every page."""
    from .listings import Page, read_records

    page = page or Page()
    by_name: dict[str, list[ObjectInfo]] = {}
    for o in storage.list(layout.DATASETS).objects:
        name, sep, _rest = o.key[len(layout.DATASETS):].partition("/")
        if sep:
            by_name.setdefault(name, []).append(o)
    found: Listed[Dataset] = Listed()
    names = []
    for name in sorted(by_name):
        try:
            names.append(validate_name(name, "dataset name"))
        except ConfigError as exc:
            found.problems.append(Problem.of(f"{layout.DATASETS}{name}/", exc))
    found.total = len(names)
    shown = page.of(names)
    manifests = {o.key: o for name in shown for o in by_name[name]
                 if o.key == layout.dataset_prefix(name) + MANIFEST}
    reads = {r.info.key: r for r in read_records(storage, list(manifests.values()), _manifest_fields_of,
                                                 kind="dataset-manifest", workers=workers,
                                                 max_bytes=MAX_MANIFEST_BYTES)}
    for name in shown:
        try:
            manifest = reads.get(layout.dataset_prefix(name) + MANIFEST, _UNREAD)
            found.items.append(_summarise(storage, name, by_name[name], found.problems, manifest)[0])
        except (ConfigError, StorageError) as exc:
            found.problems.append(Problem.of(f"{layout.DATASETS}{name}/", exc))
    return found


def describe_dataset(storage: Storage, name: str) -> Dataset:
    objs = storage.list(layout.dataset_prefix(name)).objects
    if not objs:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    return _summarise(storage, name, objs)[0]


def require_trainable(storage: Storage, name: str) -> Dataset:
    """The dataset, if it can be trained: complete (its manifest exists and reads) and with
    images. Every way to start or plan a run calls this first."""
    objs = storage.list(layout.dataset_prefix(name)).objects
    if not objs:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    d, why = _summarise(storage, name, objs)
    if why is not None:
        fix = f"upload it again: lora-cloud dataset upload FOLDER --name {name!r} --replace"
        cls = CorruptRecord if "cannot be read" in why else DatasetError
        raise cls(f"dataset {name!r} is not complete, so it cannot be trained: {why}. To finish it, {fix}")
    if d.images == 0:
        raise DatasetError(f"dataset {name!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return d


# ---- datasets: writing -----------------------------------------------------------------------
def _generated_manifest(src: Path, name: str, images: list[str], cache: sync.HashCache) -> dict[str, Any]:
    """The manifest of a plain folder (one without its own ``dataset.json``)."""
    files = []
    for rel in images:
        p = src / rel
        c = cache.checksums(p)
        cap = p.with_suffix(CAPTION_SUFFIX)
        files.append({
            "file": rel, "size": c.size, "md5": c.md5,
            "caption": cap.read_text(encoding="utf-8", errors="replace").strip() if cap.is_file() else None,
        })
    return {"name": name, "created": time.time(), "files": files, "source": "upload"}


def _folder_manifest(src: Path) -> dict[str, Any]:
    """The manifest a prepared folder brings along (the pipeline's, with settings and trigger)."""
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{src / MANIFEST} cannot be read as JSON ({exc}); fix or remove it") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{src / MANIFEST} is not a JSON object; fix or remove it")
    return manifest


def _entry_id(entry: Any) -> str | None:
    return (entry.get("image") or entry.get("file")) if isinstance(entry, dict) else None


def _merged_manifest(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new``, with the entries of ``old`` that name files ``new`` does not (a merge)."""
    if not isinstance(old, dict) or not isinstance(old.get("files"), list):
        return new
    by_id = {_entry_id(e): e for e in old["files"] if _entry_id(e)}
    by_id.update({_entry_id(e): e for e in new.get("files", []) if _entry_id(e)})
    return {**new, "files": [by_id[k] for k in sorted(by_id)]}


def _same_manifest(old: Any, new: dict[str, Any]) -> bool:
    """Equal but for the time it was made."""
    if not isinstance(old, dict):
        return False
    strip = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    return strip(old) == strip(new)


def _read_json(storage: Storage, key: str) -> Any:
    """The dataset's manifest as it is in the bucket (a rented host can write it): bounded in
    size and depth, None when missing or damaged (a publish then writes a whole new one)."""
    try:
        return read_json_record(storage, key, MAX_MANIFEST_BYTES)
    except (ObjectNotFound, ValueError, CorruptRecord):
        return None


def upload_dataset(
    storage: Storage, src: str | Path, name: str, *, replace: bool = False, merge: bool = False,
    workers: int = 8, progress: Progress | None = None, cache: sync.HashCache | None = None,
    remedy: str = UPLOAD_REMEDY, clock: Callable[[], float] = time.time, lock_stale_s: float = leases.STALE_S,
    skip_bad: bool = False, force: bool = False,
) -> dict[str, Any]:
    """Upload a folder of images (+ .txt captions, + its ``dataset.json`` if it has one) to
    ``datasets/<name>/``: the one dataset upload.

    Every image is decoded first (:func:`~comfy_lora_cloud.dataset.load.check_image_files`):
    an empty, truncated, non-image or absurdly large file refuses the whole upload with the
    reasons, before anything is written; with ``skip_bad`` those files (and their captions) stay
    behind and the result lists them under ``bad``.

    Only images, captions and the manifest travel; a folder without a manifest gets one. Onto an
    existing dataset: ``replace`` makes it exactly the folder, ``merge`` adds the folder's files;
    without either, :class:`DatasetExists` (whose message ends with ``remedy``), unless the
    dataset already holds exactly these files. The same folder uploaded again from this
    machine after a killed upload finishes it. :class:`LockHeld` when another upload to the name
    is running. :class:`DatasetInUse` when a live run trains on the dataset this would change,
    unless ``force``.
    """
    if replace and merge:
        raise ConfigError("choose one of --replace and --merge, not both")
    name = validate_name(name, "dataset name")
    src = Path(src).expanduser()
    if not src.exists():
        raise DatasetError(f"{src} does not exist: give the folder that holds your images")
    if not src.is_dir():
        raise DatasetError(f"{src} is a file, not a folder: give the folder that holds your images")
    cache = cache or sync.HashCache()
    local = [rel for rel, _p in sync.local_files(src) if is_dataset_file(rel)]
    images = [rel for rel in local if is_image(rel)]
    if not images:
        raise DatasetError(f"{src} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    bad = check_image_files(src, images, workers=workers)
    if bad and not skip_bad:
        shown = "; ".join(b["reason"] for b in bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DatasetError(f"{len(bad)} of {len(images)} image(s) in {src} cannot be trained on, so nothing was "
                           f"uploaded: {shown}. Fix or remove them, or pass --skip-bad to upload the others")
    if bad:
        left_out = {b["file"] for b in bad} | {b["file"].rsplit(".", 1)[0] + CAPTION_SUFFIX for b in bad}
        local = [rel for rel in local if rel not in left_out]
        images = [rel for rel in images if rel not in left_out]
        if not images:
            raise DatasetError(f"none of the {len(bad)} image(s) in {src} can be trained on: "
                               + "; ".join(b["reason"] for b in bad[:10]))
    folder_manifest = _folder_manifest(src) if MANIFEST in local else \
        _generated_manifest(src, name, images, cache)
    prefix = layout.dataset_prefix(name)
    source = str(src.resolve())
    asked = "replace" if replace else "merge" if merge else None
    with leases.acquire(storage, layout.dataset_lock_key(name), purpose=f"uploading {source} to {prefix}",
                        data={"source": source, "mode": asked}, stale_s=lock_stale_s, clock=clock) as lease:
        existing = {o.key[len(prefix):]: o for o in storage.list(prefix).objects
                    if o.key != prefix + layout.DATASET_LOCK}
        mode, resumed = asked, False
        prev = lease.previous
        if existing and mode is None and prev is not None and prev.host == socket.gethostname() \
                and prev.data.get("source") == source:
            # this machine's upload of this folder was killed: finish it the way it was asked
            mode, resumed = prev.data.get("mode") or "replace", True
        plan = offload.plan_push(storage, src, prefix, cache=cache)
        keep = set(local)  # the folder's dataset files, less the images left out (skip_bad)
        plan.transfers = [t for t in plan.transfers if t.rel in keep and t.rel != MANIFEST]
        plan.skips = [rel for rel in plan.skips if rel in keep and rel != MANIFEST]

        old_manifest = _read_json(storage, prefix + MANIFEST) if MANIFEST in existing else None
        manifest = folder_manifest
        if mode == "merge":
            manifest = _merged_manifest(old_manifest, manifest)
        if _same_manifest(old_manifest, manifest):
            manifest = old_manifest
        extras = sorted(rel for rel in existing if rel not in set(local) and rel != MANIFEST)
        deletes = extras if mode == "replace" else []
        unchanged = (not plan.transfers and not deletes and _same_manifest(old_manifest, manifest)
                     and (mode == "merge" or not extras))
        url = f"{storage.url.rstrip('/')}/{prefix}"
        if existing and mode is None and not unchanged:
            state = "" if MANIFEST in existing else ", incomplete"
            if prev is not None:  # we changed nothing: keep the record of the upload left half done
                lease.abandon(leave=prev)
            raise DatasetExists(f"dataset {name!r} already exists in {url} ({len(existing)} files{state}); {remedy}")
        if existing and not unchanged and not force:
            from .dataset_use import require_unused

            try:
                require_unused(storage, name, change=mode or "change", workers=workers, clock=clock)
            except DatasetInUse:
                if prev is not None:
                    lease.abandon(leave=prev)
                raise
        start = clock()
        result = sync.SyncResult(0, 0, 0, 0.0)
        if not unchanged:
            lease.confirm()
            try:
                if MANIFEST in existing:  # from here until the new manifest lands, it is incomplete
                    with contextlib.suppress(ObjectNotFound):
                        storage.delete(prefix + MANIFEST)
                result = offload.apply(plan, storage, workers=workers, progress=progress, cache=cache)
                lease.confirm()
                for rel in deletes:
                    with contextlib.suppress(ObjectNotFound):
                        storage.delete(prefix + rel)
                body = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
                lease.confirm()  # the commit: only while the lease is still ours
                storage.write_bytes(prefix + MANIFEST, body, content_type="application/json")
            except BaseException:
                # half done: leave the lease, stale, saying what this upload was (the same command
                # again finishes it; anyone else may take over at once)
                lease.abandon()
                raise
    cache.save()  # the local checksums, for the next upload of this folder
    if unchanged:
        done = "unchanged"
    else:
        done = {"replace": "replaced", "merge": "merged"}[mode] if existing else "created"  # type: ignore[index]
    return {"dataset": name, "result": done, "resumed": resumed, "files": result.files, "bytes": result.bytes,
            "skipped": len(plan.skips), "deleted": len(deletes), "seconds": round(clock() - start, 3), "url": url,
            "bad": bad}


def download_dataset(
    storage: Storage, name: str, dest: str | Path, *, workers: int = 8, progress: Progress | None = None,
    cache: sync.HashCache | None = None, require_complete: bool = True,
) -> dict[str, Any]:
    """Bring ``datasets/<name>/`` into ``dest`` (images, captions, manifest; files already there
    and identical are skipped): the one dataset download. An incomplete dataset is refused
    unless ``require_complete`` is off (``validate`` looks at whatever is there)."""
    prefix = layout.dataset_prefix(name)
    objs = storage.list(prefix).objects
    if not objs:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    if require_complete:
        d, why = _summarise(storage, name, objs)
        if why is not None:
            raise DatasetError(f"dataset {name!r} is not complete: {why}")
    dest = Path(dest).expanduser()
    sweep_partials(dest)
    plan = offload.plan_pull(storage, prefix, dest, cache=cache)
    plan.transfers = [t for t in plan.transfers if is_dataset_file(t.rel)]
    plan.skips = [rel for rel in plan.skips if is_dataset_file(rel)]
    result = offload.apply(plan, storage, workers=workers, progress=progress, cache=cache)
    return {"dataset": name, "files": result.files, "bytes": result.bytes, "skipped": len(plan.skips),
            "path": str(dest), "seconds": round(result.seconds, 3)}


def delete_dataset(storage: Storage, name: str) -> int:
    prefix = layout.dataset_prefix(name)
    n = storage.delete_prefix(prefix)
    if n == 0:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    return n


# ---- LoRAs -----------------------------------------------------------------------------------
def read_lora_sidecar(storage: Storage, key: str) -> dict[str, Any]:
    """A LoRA's ``<name>.json`` as a JSON object; :class:`CorruptRecord` when it is not one."""
    meta = read_json_record(storage, key, MAX_SIDECAR_BYTES)
    if not isinstance(meta, dict):
        raise CorruptRecord(f"{key} is not a JSON object")
    return meta


def _lora_sidecar_of(data: bytes, key: str) -> dict[str, Any]:
    meta = parse_json_record(data, key)
    if not isinstance(meta, dict):
        raise CorruptRecord(f"{key} is not a JSON object")
    return meta


def list_loras(storage: Storage, page: Any = None, *, workers: int = 16) -> Listed[Lora]:
    """LoRAs in the bucket by name, from one paged listing of ``loras/``; only the ``page`` shown
    (a :class:`~.listings.Page`, default all) has its sidecars read, in parallel and remembered
    by generation. Names no route could use and unreadable sidecars are reported in
    ``problems`` (the LoRA itself is still listed when only its sidecar is bad)."""
    from .listings import Page, read_records

    page = page or Page()
    found: Listed[Lora] = Listed()
    objs = storage.list(layout.LORAS, delimiter="/").objects
    metas = {o.key: o for o in objs if o.key.endswith(".json")}
    valid: list[tuple[str, ObjectInfo]] = []
    for o in objs:
        if not o.key.endswith(layout.LORA_SUFFIX):
            continue
        name = o.key[len(layout.LORAS):-len(layout.LORA_SUFFIX)]
        try:
            validate_name(name, "LoRA name")
        except ConfigError as exc:
            found.problems.append(Problem.of(o.key, exc))
            continue
        valid.append((name, o))
    valid.sort(key=lambda v: v[0])
    found.total = len(valid)
    shown = page.of(valid)
    wanted = [metas[layout.LORAS + name + ".json"] for name, _o in shown if layout.LORAS + name + ".json" in metas]
    reads = {r.info.key: r for r in read_records(storage, wanted, _lora_sidecar_of, kind="lora-sidecar",
                                                 workers=workers, max_bytes=MAX_SIDECAR_BYTES)}
    for name, o in shown:
        meta: dict[str, Any] = {}
        read = reads.get(layout.LORAS + name + ".json")
        if read is not None and read.error is not None:
            found.problems.append(Problem.of(read.info.key, read.error))
        elif read is not None:
            meta = read.value or {}
        found.items.append(Lora(name=name, size=o.size, md5=o.md5, crc32c=o.crc32c, updated=o.updated, metadata=meta))
    return found


def comfy_lora_folder(loras_root: str | Path) -> Path:
    """The folder under ComfyUI's ``models/loras`` that this pack downloads into."""
    return Path(loras_root) / COMFY_LORA_FOLDER


def _matches(path: Path, info: ObjectInfo) -> bool:
    """The one checksum rule: same size, and the same md5 (or crc32c when storage has no md5)."""
    try:
        if path.stat().st_size != info.size:
            return False
    except OSError:
        return False
    local = checksum_file(path)
    return local.md5 == info.md5 if info.md5 else local.crc32c == info.crc32c


def download_lora(storage: Storage, name: str, dest_dir: str | Path) -> Path:
    """Bring ``loras/<name>.safetensors`` to ``dest_dir/<name>.safetensors``: the one LoRA download.

    A file already there with the bucket's checksum is kept; otherwise the bytes land through a
    hidden ``....part`` file (never a ``.safetensors`` that ComfyUI would list) that storage
    verifies against the object's checksum before renaming it in. Partial files a killed
    download left in ``dest_dir`` are removed first.
    """
    key = layout.lora_key(name)
    dest_dir = Path(dest_dir).expanduser()
    dest = dest_dir / layout.lora_file_name(name)
    info = storage.stat(key)  # a LoRA that is not there creates no folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    for stale in sweep_partials(dest_dir):
        log.info("removed %s, left by a download that did not finish", stale.name)
    if dest.is_file() and _matches(dest, info):
        return dest
    storage.download_file(key, dest)
    return dest


def delete_lora(storage: Storage, name: str) -> int:
    n = 0
    for key in (layout.lora_key(name), layout.lora_meta_key(name)):
        try:
            storage.delete(key)
            n += 1
        except ObjectNotFound:
            pass
    if n == 0:
        raise ObjectNotFound(f"no LoRA named {name!r} in {storage.url}")
    return n


# ---- the service -----------------------------------------------------------------------------
class Library:
    """Datasets and LoRAs for every edge (routes, nodes, CLI), over the app's current storage.

    Coroutines that never block their loop: storage and Pillow work runs in worker threads. The
    one home of: listing, uploading, downloading and deleting datasets; listing, downloading
    (checksum verified, into the app's LoRA folder unless told otherwise) and deleting LoRAs.
    """

    def __init__(self, core: Core):
        from .media import Thumbnailer

        self.core = core
        self._header_cache: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._hash_cache: Any = None
        self.thumbnails = Thumbnailer()

    # ---- datasets ----------------------------------------------------------------------------
    async def datasets(self) -> list[dict[str, Any]]:
        return (await self.dataset_listing())["datasets"]

    async def dataset_listing(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """``{"datasets", "problems", "total", "offset", "limit"}``: one page of the datasets by
        name (all of them without ``limit``); entries that cannot be read are skipped and
        reported. Costs one paged listing plus the manifests of the page (see :mod:`.listings`)."""
        from .listings import Page

        page = Page(offset, limit)
        found = await asyncio.to_thread(lambda: list_datasets(self.core.storage, page,
                                                              workers=self.core.settings.sync_workers))
        return {"datasets": [d.to_dict() for d in found.items], "problems": [p.to_dict() for p in found.problems],
                **page.describe(found.total or 0)}

    async def describe(self, name: str) -> Dataset:
        return await asyncio.to_thread(lambda: describe_dataset(self.core.storage, name))

    async def require_trainable(self, name: str) -> Dataset:
        """The dataset, if it is complete and has images (see :func:`require_trainable`)."""
        return await asyncio.to_thread(lambda: require_trainable(self.core.storage, name))

    async def dataset_images(self, name: str) -> list[dict[str, Any]]:
        """Every image of a dataset with its caption (``None`` when it has no .txt)."""
        return await asyncio.to_thread(self._dataset_images, name)

    def _dataset_images(self, name: str) -> list[dict[str, Any]]:
        import concurrent.futures

        storage = self.core.storage
        prefix = layout.dataset_prefix(name)
        objs = storage.list(prefix).objects
        if not objs:
            raise ObjectNotFound(f"no dataset named {name!r}")
        sizes = {o.key: o.size for o in objs}
        images = [o for o in objs if Path(o.key).suffix.lower() in IMAGE_SUFFIXES and _servable(o.key[len(prefix):])]

        def caption(key: str) -> str | None:
            cap_key = _caption_key(key)
            if cap_key not in sizes or sizes[cap_key] > MAX_CAPTION_BYTES:  # the listing says how big
                return None
            return storage.read_bytes(cap_key)[:MAX_CAPTION_BYTES].decode("utf-8", errors="replace").strip()

        # one small read per caption: in parallel, since a bucket answers each in tens of ms
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.core.settings.sync_workers) as pool:
            captions = list(pool.map(caption, [o.key for o in images]))
        return [{"file": o.key[len(prefix):], "size": o.size, "caption": c} for o, c in zip(images, captions)]

    async def dataset_captions(self, name: str) -> dict[str, str | None]:
        return {i["file"]: i["caption"] for i in await self.dataset_images(name)}

    async def dataset_image(self, name: str, file: str) -> Any:
        """An image as the browser may get it (a :class:`~.media.ServedFile`): typed by its bytes,
        not its name; anything else as a sandboxed attachment."""
        from .media import read_media, served_file

        key = self._image_key(name, file)
        data = await asyncio.to_thread(lambda: read_media(self.core.storage, key))
        return served_file(data, file)

    async def dataset_thumbnail(self, name: str, file: str, size: int = 256) -> bytes:
        """A JPEG no larger than ``size`` pixels on its long side (one of ``THUMB_SIZES``): byte-
        and pixel-limited, decoded on a bounded pool, cached (:class:`~.media.Thumbnailer`)."""
        from .files import THUMB_SIZES

        if size not in THUMB_SIZES:
            raise ConfigError(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
        key = self._image_key(name, file)
        storage = await asyncio.to_thread(lambda: self.core.storage)
        return await self.thumbnails.thumbnail(storage, key, size)

    @staticmethod
    def _image_key(name: str, file: str) -> str:
        from .files import check_file_name

        check_file_name(file)
        if Path(file).suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{file!r} is not an image")
        return layout.dataset_prefix(name) + file

    async def upload_dataset(self, src: str | Path, name: str, *, replace: bool = False, merge: bool = False,
                             progress: Progress | None = None, remedy: str = UPLOAD_REMEDY,
                             skip_bad: bool = False, force: bool = False) -> dict[str, Any]:
        """The one dataset upload (:func:`upload_dataset`): every image decoded first, manifest
        last, one writer at a time, an existing dataset only with ``replace`` or ``merge``, and
        not one a live run trains on unless ``force``."""
        settings = self.core.settings
        return await asyncio.to_thread(lambda: upload_dataset(
            self.core.storage, src, name, replace=replace, merge=merge, workers=settings.sync_workers,
            progress=progress, cache=self.hash_cache(), remedy=remedy, clock=self.core.clock, skip_bad=skip_bad,
            force=force))

    async def download_dataset(self, name: str, dest: str | Path, *, progress: Progress | None = None,
                               require_complete: bool = True) -> dict[str, Any]:
        """The one dataset download (:func:`download_dataset`)."""
        settings = self.core.settings
        return await asyncio.to_thread(lambda: download_dataset(
            self.core.storage, name, dest, workers=settings.sync_workers, progress=progress, cache=self.hash_cache(),
            require_complete=require_complete))

    async def delete_dataset(self, name: str) -> dict[str, Any]:
        n = await asyncio.to_thread(lambda: delete_dataset(self.core.storage, name))
        return {"dataset": name, "deleted": n}

    def hash_cache(self) -> Any:
        """Local file checksums remembered between runs, so a re-sync does not re-hash. One per
        app, so what a plan hashed is saved by the transfer that follows it."""
        from ...storage.sync import HashCache

        path = self.core.settings.home / "hash-cache.json"
        if self._hash_cache is None or self._hash_cache.path != path:
            self._hash_cache = HashCache(path)
        return self._hash_cache

    async def prepare(self, source: str, name: str, *, lora_type: str = "character", caption: str = "none",
                      trigger: str | None = None, remove_background: bool = False, caption_model: str | None = None,
                      background_model: str | None = None, resolution: int = 1024, upscale: bool = False,
                      overwrite_captions: bool = False, replace_existing: bool = False, workers: int | None = None,
                      device: str = "auto", progress: Callable[[str, int, int], None] | None = None,
                      force: bool = False) -> Any:
        """Crop, bucket and caption photos (a folder, or a dataset in storage) for a LoRA type,
        then publish them as ``datasets/<name>/``. Returns the pipeline's result. Replacing a
        dataset a live run trains on is refused (:class:`DatasetInUse`) unless ``force``."""
        from ...dataset.bucket import BucketConfig
        from ...dataset.pipeline import PrepareOptions

        name = validate_name(name, "dataset name")
        trigger = check_trigger(trigger)
        settings = self.core.settings
        if isinstance(resolution, bool) or not isinstance(resolution, int) or not 256 <= resolution <= 2048 \
                or resolution % 64:  # the training resolution's range (training.presets.LIMITS)
            raise ConfigError(f"resolution must be a multiple of 64 from 256 to 2048 pixels (Flux trains at 512-1024), "
                              f"not {resolution!r}")
        if workers is not None and not 1 <= workers <= 256:
            raise ConfigError(f"workers must be from 1 to 256, not {workers!r}")
        try:
            bucket = BucketConfig(resolution=resolution, max_reso=max(resolution, 1024), upscale=upscale)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        options = PrepareOptions(
            lora_type=lora_type, trigger=trigger, remove_background=remove_background,
            background_model=background_model or settings.rembg_model_path, bucket=bucket, caption=caption,
            caption_model=caption_model or settings.caption_model_path, caption_device=device,
            overwrite_captions=overwrite_captions, workers=workers,
        )
        return await asyncio.to_thread(lambda: offload.prepare(  # a worker process, from ComfyUI
            self.core.storage, source, name, options, replace_existing=replace_existing, force=force,
            progress=progress))

    async def validate(self, name: str, trigger: str | None = None) -> Any:
        """Check a stored dataset (images, captions, buckets, duplicates, trigger). Returns the report."""
        import tempfile

        from ...dataset.validate import validate_folder

        def run() -> Any:
            with tempfile.TemporaryDirectory(prefix="lora-cloud-validate-") as tmp:
                # whatever is there, complete or not: finding what is wrong is the point
                download_dataset(self.core.storage, name, tmp, require_complete=False)
                return validate_folder(Path(tmp), trigger=trigger)

        return await asyncio.to_thread(run)

    # ---- LoRAs -------------------------------------------------------------------------------
    async def loras(self) -> list[dict[str, Any]]:
        """LoRAs in the bucket; ``local`` says whether the LoRA folder has a copy."""
        return (await self.lora_listing())["loras"]

    async def lora_listing(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """``{"loras", "problems", "total", "offset", "limit"}``: one page of the LoRAs by name
        (all without ``limit``), their sidecars read for that page only; entries that cannot be
        read are skipped and reported."""
        from .listings import Page

        page = Page(offset, limit)

        def run() -> dict[str, Any]:
            found = list_loras(self.core.storage, page, workers=self.core.settings.sync_workers)
            out = []
            for lora in found.items:
                d = lora.to_dict()
                d["local"] = (self.core.loras_dir / layout.lora_file_name(lora.name)).is_file()
                out.append(d)
            return {"loras": out, "problems": [p.to_dict() for p in found.problems], **page.describe(found.total or 0)}

        return await asyncio.to_thread(run)

    async def lora_metadata(self, name: str) -> dict[str, Any]:
        """The ``__metadata__`` (kohya's ``ss_*`` keys) of a LoRA's safetensors header, plus the
        bucket's ``<name>.json`` sidecar when there is one."""
        return await asyncio.to_thread(self._lora_metadata, name)

    def _lora_metadata(self, name: str) -> dict[str, Any]:
        from .files import parse_safetensors_header

        storage = self.core.storage
        key = layout.lora_key(name)
        info = storage.stat(key)
        cache_key = (key, info.md5 or str(info.generation))
        header = self._header_cache.get(cache_key)
        if header is None:
            # The Storage protocol has no ranged read, so this fetches the whole object (verified);
            # the result is cached per content hash, and a file over the cap is not fetched at all.
            if info.size > MAX_LORA_READ_BYTES:
                raise DatasetError(f"LoRA {name} is {info.size / 1e9:.1f} GB: too large to read its metadata")
            header = parse_safetensors_header(storage.read_bytes(key))
            self._header_cache[cache_key] = header
        sidecar: dict[str, Any] = {}
        problems: list[dict[str, Any]] = []
        try:
            sidecar = read_lora_sidecar(storage, layout.lora_meta_key(name))
        except ObjectNotFound:
            pass
        except StorageError as exc:
            problems.append(Problem.of(layout.lora_meta_key(name), exc).to_dict())
        from ...training.lora_meta import from_header

        # "lora_cloud": what made it, as its own header says (the trainer writes the same fields
        # into the header and the sidecar: the header is what a downloaded file keeps)
        return {"name": name, "size": info.size, "md5": info.md5, **header, "lora_cloud": from_header(header["metadata"]),
                "info": sidecar, "problems": problems}

    async def lora_file_metadata(self, path: str | Path) -> dict[str, Any]:
        """The same for a LoRA file on this machine (a download): its header says what made it."""
        def run() -> dict[str, Any]:
            from ...training.lora_meta import from_header, read_safetensors_metadata

            p = Path(path).expanduser()
            try:
                meta = read_safetensors_metadata(p)
            except OSError as exc:
                raise ObjectNotFound(f"cannot read {p}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise DatasetError(f"{p.name}: {exc}") from None
            return {"name": p.name.removesuffix(layout.LORA_SUFFIX), "path": str(p), "size": p.stat().st_size,
                    "metadata": meta, "lora_cloud": from_header(meta), "info": {}, "problems": []}

        return await asyncio.to_thread(run)

    async def download_lora(self, name: str, dest_dir: str | Path | None = None) -> dict[str, Any]:
        """Copy a LoRA into ``dest_dir`` (default: the app's LoRA folder) through the one LoRA
        download (:func:`download_lora`)."""
        def run() -> dict[str, Any]:
            path = download_lora(self.core.storage, name, dest_dir or self.core.loras_dir)
            return {"name": name, "path": str(path), "size": path.stat().st_size}

        return await asyncio.to_thread(run)

    async def delete_lora(self, name: str) -> dict[str, Any]:
        n = await asyncio.to_thread(lambda: delete_lora(self.core.storage, name))
        return {"name": name, "deleted": n}
