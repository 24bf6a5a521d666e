"""A dataset's manifest (``dataset.json``) and what it makes of the dataset: the listing, the
record of one dataset, whether it may be trained, and the manifest an upload writes.

The manifest is written last, and removed first before a dataset that has one is changed
(:mod:`.datasets`); so a dataset whose manifest exists is complete, and one without (an upload
that was killed) is listed with ``complete: false`` and cannot be trained.

Bucket content is untrusted input (a rented host can write it): a manifest is read size-capped
and typed; a listing reads each entry on its own, skips one it cannot read and reports it in
``problems``; it never fails as a whole.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...errors import ConfigError, CorruptRecord, DatasetError, ObjectNotFound, StorageError
from ...models import MAX_TRIGGER, Dataset, Listed, Problem, validate_name
from ...storage import Storage, layout, sync
from ...storage.base import ObjectInfo, parse_json_record, read_json_record
from ...storage.layout import CAPTION_SUFFIX, IMAGE_SUFFIXES, MANIFEST, is_dataset_file, is_image
from .files import check_file_name
from .listings import Page, read_records

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CAPTION_BYTES = 64 * 1024  # a caption is a line or two; a bigger .txt is not read
LORA_TYPES = ("character", "style", "concept")


def servable(name: str) -> bool:
    """A file name the image routes would accept (others are left out of image lists)."""
    try:
        check_file_name(name)
    except ConfigError:
        return False
    return True


def caption_key(key: str) -> str:
    return key.rsplit(".", 1)[0] + CAPTION_SUFFIX


def manifest_fields(storage: Storage, key: str) -> tuple[str | None, str | None]:
    """``trigger`` and ``lora_type`` from a dataset manifest (top level or under ``settings``),
    read as untrusted input (size-capped, typed); :class:`CorruptRecord` when it is not one."""
    return _parse_manifest_fields(read_json_record(storage, key, MAX_MANIFEST_BYTES), key)


def _manifest_fields_of(data: bytes, key: str) -> tuple[str | None, str | None]:
    """:func:`manifest_fields` of bytes already read (a listing's parallel reads)."""
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


def summarise(storage: Storage, name: str, objs: list[ObjectInfo],
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
                trigger, lora_type = manifest_fields(storage, prefix + MANIFEST)
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
        captioned=sum(1 for o in images if caption_key(o.key) in captions),
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
            found.items.append(summarise(storage, name, by_name[name], found.problems, manifest)[0])
        except (ConfigError, StorageError) as exc:
            found.problems.append(Problem.of(f"{layout.DATASETS}{name}/", exc))
    return found


def describe_dataset(storage: Storage, name: str) -> Dataset:
    objs = storage.list(layout.dataset_prefix(name)).objects
    if not objs:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    return summarise(storage, name, objs)[0]


def require_trainable(storage: Storage, name: str) -> Dataset:
    """The dataset, if it can be trained: complete (its manifest exists and reads) and with
    images. Every way to start or plan a run calls this first."""
    objs = storage.list(layout.dataset_prefix(name)).objects
    if not objs:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    d, why = summarise(storage, name, objs)
    if why is not None:
        fix = f"upload it again: lora-cloud dataset upload FOLDER --name {name!r} --replace"
        cls = CorruptRecord if "cannot be read" in why else DatasetError
        raise cls(f"dataset {name!r} is not complete, so it cannot be trained: {why}. To finish it, {fix}")
    if d.images == 0:
        raise DatasetError(f"dataset {name!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return d


# ---- the manifest an upload writes --------------------------------------------------------
def generated_manifest(src: Path, name: str, images: list[str], cache: sync.HashCache) -> dict[str, Any]:
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


def folder_manifest(src: Path) -> dict[str, Any]:
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


def merged_manifest(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new``, with the entries of ``old`` that name files ``new`` does not (a merge)."""
    if not isinstance(old, dict) or not isinstance(old.get("files"), list):
        return new
    by_id = {_entry_id(e): e for e in old["files"] if _entry_id(e)}
    by_id.update({_entry_id(e): e for e in new.get("files", []) if _entry_id(e)})
    return {**new, "files": [by_id[k] for k in sorted(by_id)]}


def same_manifest(old: Any, new: dict[str, Any]) -> bool:
    """Equal but for the time it was made."""
    if not isinstance(old, dict):
        return False
    strip = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    return strip(old) == strip(new)


def read_manifest(storage: Storage, key: str) -> Any:
    """The dataset's manifest as it is in the bucket (a rented host can write it): bounded in
    size and depth, None when missing or damaged (a publish then writes a whole new one)."""
    try:
        return read_json_record(storage, key, MAX_MANIFEST_BYTES)
    except (ObjectNotFound, ValueError, CorruptRecord):
        return None

