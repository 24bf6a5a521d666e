"""LoRAs in storage: list, download, delete. The one LoRA download is :func:`download_lora`
(``lora download``, the sidebar's route, Await LoRA through ``runs.fetch_lora``, the Cloud
LoRA Loader), into the folder :func:`comfy_lora_folder` names under ComfyUI's
``models/loras``.

A LoRA's ``<name>.json`` sidecar is untrusted input (a rented host writes it): read
size-capped, and one that cannot be read is reported in ``problems``, never fatal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...errors import ConfigError, CorruptRecord, ObjectNotFound
from ...models import Listed, Lora, Problem, validate_name
from ...storage import Storage, layout
from ...storage import sweep_partials
from ...storage.base import ObjectInfo, checksum_file, parse_json_record, read_json_record
from .listings import Page, read_records

log = logging.getLogger(__name__)

MAX_SIDECAR_BYTES = 1024 * 1024
MAX_LORA_READ_BYTES = 4 * 1024**3  # a safetensors header needs the whole file (no ranged read): cap it
#: where ComfyUI finds the LoRAs this pack downloads: ``models/loras/lora_cloud/``
COMFY_LORA_FOLDER = "lora_cloud"


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


def matches_object(path: Path, info: ObjectInfo) -> bool:
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
    if dest.is_file() and matches_object(dest, info):
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

