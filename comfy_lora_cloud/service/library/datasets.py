"""A dataset's transfers: upload, download, delete. The one home of each, whichever edge asks:

* a dataset upload is :func:`upload_dataset` (``dataset upload``, the Save Dataset node,
  ``dataset prepare``'s publish step, the sidebar's staged uploads);
* a dataset download is :func:`download_dataset` (``dataset download``, Load Images from a
  dataset, ``dataset prepare``/``validate`` from storage, a run's preflight).

Why a dataset is written the way it is:

* The manifest (``dataset.json``) is written last, and removed first before a dataset that has
  one is changed (:mod:`.manifests` reads what that means).
* One writer at a time: an upload holds a lease (:mod:`~comfy_lora_cloud.storage.lock`) on
  ``datasets/<name>/``; a second upload fails naming the first, a killed one's lease is taken
  over, and the same folder uploaded again by the same machine finishes what it started.
* Writing into an existing dataset needs a word: replace (it becomes exactly the folder) or
  merge (the folder's files are added); uploading the very same files again changes nothing
  and needs neither. A dataset a live run trains on is not changed unless forced
  (:mod:`.dataset_use`).

The sync engine's work (planning, which may hash every file, and the transfers) goes through
the ``transfers`` given (:class:`~.transfers.Transfers`): the app's offload, which runs it in a
worker process inside ComfyUI; this process by default.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from ...dataset.load import check_image_files
from ...errors import ConfigError, DatasetError, DatasetExists, DatasetInUse, ObjectNotFound
from ...models import validate_name
from ...storage import Storage, layout, sync
from ...storage import lock as leases
from ...storage import sweep_partials
from ...storage.layout import CAPTION_SUFFIX, IMAGE_SUFFIXES, MANIFEST, is_dataset_file, is_image
from .dataset_use import require_unused
from .manifests import folder_manifest, generated_manifest, merged_manifest, read_manifest, same_manifest, summarise
from .transfers import IN_PROCESS, Transfers
from .views import DatasetDownload, DatasetUpload

Progress = Callable[[Any], None]  # receives storage.sync.Progress events
UPLOAD_REMEDY = ("pass --replace to make it exactly this folder (files it lacks are deleted), or --merge to add "
                 "this folder's files to it")


def upload_dataset(
    storage: Storage, src: str | Path, name: str, *, replace: bool = False, merge: bool = False,
    workers: int = 8, progress: Progress | None = None, cache: sync.HashCache | None = None,
    remedy: str = UPLOAD_REMEDY, clock: Callable[[], float] = time.time, lock_stale_s: float = leases.STALE_S,
    skip_bad: bool = False, force: bool = False, transfers: Transfers = IN_PROCESS,
) -> DatasetUpload:
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
    new_manifest = folder_manifest(src) if MANIFEST in local else \
        generated_manifest(src, name, images, cache)
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
        plan = transfers.plan_push(storage, src, prefix, cache=cache)
        keep = set(local)  # the folder's dataset files, less the images left out (skip_bad)
        plan.transfers = [t for t in plan.transfers if t.rel in keep and t.rel != MANIFEST]
        plan.skips = [rel for rel in plan.skips if rel in keep and rel != MANIFEST]

        old_manifest = read_manifest(storage, prefix + MANIFEST) if MANIFEST in existing else None
        manifest = new_manifest
        if mode == "merge":
            manifest = merged_manifest(old_manifest, manifest)
        if same_manifest(old_manifest, manifest):
            manifest = old_manifest
        extras = sorted(rel for rel in existing if rel not in set(local) and rel != MANIFEST)
        deletes = extras if mode == "replace" else []
        unchanged = (not plan.transfers and not deletes and same_manifest(old_manifest, manifest)
                     and (mode == "merge" or not extras))
        url = f"{storage.url.rstrip('/')}/{prefix}"
        if existing and mode is None and not unchanged:
            state = "" if MANIFEST in existing else ", incomplete"
            if prev is not None:  # we changed nothing: keep the record of the upload left half done
                lease.abandon(leave=prev)
            raise DatasetExists(f"dataset {name!r} already exists in {url} ({len(existing)} files{state}); {remedy}")
        if existing and not unchanged and not force:
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
                result = transfers.apply(plan, storage, workers=workers, progress=progress, cache=cache)
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
    return DatasetUpload(dataset=name, result=done, resumed=resumed, files=result.files, bytes=result.bytes,
                         skipped=len(plan.skips), deleted=len(deletes), seconds=round(clock() - start, 3), url=url,
                         bad=tuple(bad))


def download_dataset(
    storage: Storage, name: str, dest: str | Path, *, workers: int = 8, progress: Progress | None = None,
    cache: sync.HashCache | None = None, require_complete: bool = True, transfers: Transfers = IN_PROCESS,
) -> DatasetDownload:
    """Bring ``datasets/<name>/`` into ``dest`` (images, captions, manifest; files already there
    and identical are skipped): the one dataset download. An incomplete dataset is refused
    unless ``require_complete`` is off (``validate`` looks at whatever is there)."""
    prefix = layout.dataset_prefix(name)
    objs = storage.list(prefix).objects
    if not objs:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    if require_complete:
        d, why = summarise(storage, name, objs)
        if why is not None:
            raise DatasetError(f"dataset {name!r} is not complete: {why}")
    dest = Path(dest).expanduser()
    sweep_partials(dest)
    plan = transfers.plan_pull(storage, prefix, dest, cache=cache)
    plan.transfers = [t for t in plan.transfers if is_dataset_file(t.rel)]
    plan.skips = [rel for rel in plan.skips if is_dataset_file(rel)]
    result = transfers.apply(plan, storage, workers=workers, progress=progress, cache=cache)
    return DatasetDownload(dataset=name, files=result.files, bytes=result.bytes, skipped=len(plan.skips),
                           path=str(dest), seconds=round(result.seconds, 3))


def delete_dataset(storage: Storage, name: str) -> int:
    prefix = layout.dataset_prefix(name)
    n = storage.delete_prefix(prefix)
    if n == 0:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    return n

