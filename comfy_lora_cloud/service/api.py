"""``LoraCloudService``: the one facade that ComfyUI's routes, the nodes and the CLI share.

Every method is a coroutine that never blocks its event loop: storage, SQLite and Pillow work
runs in worker threads (``asyncio.to_thread``). The service keeps no loop-bound object (no
session, lock or task), so ComfyUI's server loop, a node's per-prompt loop and the pack's own
poller loop can all share one instance.

What it reads:

- runs: the state store (what this controller launched) merged with ``runs/<id>/status.json``
  in storage (what the trainer reports; the trainer wins where both speak, unless this
  controller ended the run, since a destroyed trainer cannot report it);
- instances and money: the state store's ``instances`` table and cost ledger; stop, destroy
  and logs go to the provider (a fresh one per call, from ``provider_factory``);
- datasets and LoRAs: :mod:`comfy_lora_cloud.service.library` over the configured storage.

Dependencies are injected, so tests build it over a :class:`LocalStorage` in a temp folder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import struct
import time
from pathlib import Path
from typing import Any, AsyncContextManager, Callable

from ..errors import ConfigError, CorruptRecord, DatasetError, ObjectNotFound, StorageError, redact
from ..models import Listed, Problem, RunState, validate_name
from ..providers.base import Capability, Provider
from ..settings import Settings, set_value
from ..storage import Storage
from ..storage import layout
from ..training import status as run_status
from . import library
from .media import SAMPLE_SUFFIXES, ImageSniffer, ServedFile, Thumbnailer, make_thumbnail, read_media, served_file
from .budgets import Budgets
from .costs import CostLedger
from .runs import TrainRequest, mark_stopped_in_bucket, provider_factory, start_run
from .state import StateStore

Emit = Callable[[str, dict[str, Any]], None]
Clock = Callable[[], float]
# A fresh provider per use: the vast.ai client holds an httpx.AsyncClient, which is bound to the
# loop it first ran on, and this service is shared by several loops.
ProviderFactory = Callable[[], AsyncContextManager[Provider]]

# Websocket event names (comfy/events.py sends them; the sidebar listens for them)
RUN_EVENT = "lora_cloud.run"
INSTANCE_EVENT = "lora_cloud.instance"
BUDGET_EVENT = "lora_cloud.budget"

BUDGET_KEYS = tuple(Budgets().to_dict())
THUMB_SIZES = (64, 128, 256, 512)
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit for the JSON header
MAX_LORA_READ_BYTES = 4 * 1024**3  # the header needs the whole file (no ranged read): cap it
START_RUN_KEYS = frozenset({"dataset", "lora_type", "gpu", "provider", "interruptible"})
RUN_LIST_LIMIT = 50
MAX_CAPTION_BYTES = 64 * 1024  # a caption is a line or two; a bigger .txt is not read
CLOCK_SKEW_S = 600.0  # how far ahead a trainer's clock may be before its status is not believed


def _no_emit(event: str, data: dict[str, Any]) -> None:
    """Default event sink: nobody is listening (CLI, tests that do not care)."""


def check_file_name(name: str, kind: str = "file name") -> str:
    """A single file name inside a dataset or a run folder: no separators, no ``..``, not hidden.

    Looser than :func:`validate_name` (camera files such as ``IMG (1).jpg`` are fine), strict
    about everything that could leave the folder.
    """
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ConfigError(f"{kind} must be 1 to 255 characters")
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        raise ConfigError(f"{kind} {name!r} must not contain '/', '\\' or '..', nor start with '.'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"{kind} {name!r} must not contain control characters")
    return name


def _servable_name(name: str) -> bool:
    try:
        check_file_name(name)
    except ConfigError:
        return False
    return True


def parse_safetensors_header(data: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8-byte little-endian length, then that much JSON.

    Returns ``{"metadata": {...__metadata__ (ss_* keys)...}, "tensors": n}``. Raises
    :class:`DatasetError` when the bytes are not a safetensors file.
    """
    if len(data) < 8:
        raise DatasetError("not a safetensors file: shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length == 0 or length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise DatasetError("not a safetensors file: bad header length")
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, RecursionError):
        raise DatasetError("not a safetensors file: the header is not JSON") from None
    if not isinstance(header, dict):
        raise DatasetError("not a safetensors file: the header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        meta = {}
    # metadata values are text for kohya; anything else is shown as JSON text, never as markup
    return {"metadata": {str(k)[:200]: (v if isinstance(v, str) else json.dumps(v))[:10_000] for k, v in meta.items()},
            "tensors": sum(1 for k in header if k != "__metadata__")}


__all__ = ["LoraCloudService", "make_thumbnail", "parse_safetensors_header", "check_file_name"]


def vast_provider_factory(settings: Settings) -> ProviderFactory:
    """Opens a :class:`VastProvider` with the configured key (a fresh client per call: a client
    belongs to the loop it first ran on)."""
    return provider_factory("vast", settings)


class LoraCloudService:
    """Datasets, LoRAs, runs, instances, costs and budgets, as coroutines returning plain JSON data."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        state: StateStore,
        *,
        emit: Emit | None = None,
        clock: Clock = time.time,
        loras_dir: str | Path | None = None,
        provider_factory: ProviderFactory | None = None,
    ):
        self.settings = settings
        self.storage = storage
        self.state = state
        self.provider_factory = provider_factory
        self.emit = emit or _no_emit
        self.clock = clock
        self.loras_dir = Path(loras_dir or settings.comfyui_loras_dir or settings.home / "loras")
        self._header_cache: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.thumbnails = Thumbnailer()
        self.sniffer = ImageSniffer()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> "LoraCloudService":
        """The service over the configured storage and state store (blocking: call it in a thread)."""
        from ..storage import open_storage

        kwargs.setdefault("provider_factory", vast_provider_factory(settings))
        return cls(settings, open_storage(settings=settings), StateStore(settings.state_db), **kwargs)

    # ---- datasets --------------------------------------------------------------------------------
    async def datasets(self) -> list[dict[str, Any]]:
        return (await self.dataset_listing())["datasets"]

    async def dataset_listing(self) -> dict[str, Any]:
        """``{"datasets", "problems"}``: entries that cannot be read are skipped and reported."""
        found = await asyncio.to_thread(library.list_datasets, self.storage)
        return {"datasets": [d.to_dict() for d in found.items], "problems": [p.to_dict() for p in found.problems]}

    async def dataset_images(self, name: str) -> list[dict[str, Any]]:
        """Every image of a dataset with its caption (``None`` when it has no .txt)."""
        return await asyncio.to_thread(self._dataset_images, name)

    def _dataset_images(self, name: str) -> list[dict[str, Any]]:
        prefix = layout.dataset_prefix(name)
        objs = self.storage.list(prefix).objects
        if not objs:
            raise ObjectNotFound(f"no dataset named {name!r}")
        sizes = {o.key: o.size for o in objs}
        images = [o for o in objs
                  if Path(o.key).suffix.lower() in library.IMAGE_SUFFIXES and _servable_name(o.key[len(prefix):])]

        def caption(key: str) -> str | None:
            cap_key = key.rsplit(".", 1)[0] + ".txt"
            if cap_key not in sizes or sizes[cap_key] > MAX_CAPTION_BYTES:  # the listing says how big
                return None
            return self.storage.read_bytes(cap_key)[:MAX_CAPTION_BYTES].decode("utf-8", errors="replace").strip()

        # one small read per caption: in parallel, since a bucket answers each in tens of ms
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.sync_workers) as pool:
            captions = list(pool.map(caption, [o.key for o in images]))
        return [{"file": o.key[len(prefix):], "size": o.size, "caption": c} for o, c in zip(images, captions)]

    async def dataset_captions(self, name: str) -> dict[str, str | None]:
        images = await self.dataset_images(name)
        return {i["file"]: i["caption"] for i in images}

    async def dataset_image(self, name: str, file: str) -> ServedFile:
        """An image as the browser may get it: typed by its bytes, not its name (media.py)."""
        key = self._image_key(name, file)
        data = await asyncio.to_thread(read_media, self.storage, key)
        return served_file(data, file)

    async def dataset_thumbnail(self, name: str, file: str, size: int = 256) -> bytes:
        """A JPEG no larger than ``size`` pixels on its long side (one of :data:`THUMB_SIZES`):
        size- and pixel-limited, decoded on a bounded pool, cached (media.Thumbnailer)."""
        if size not in THUMB_SIZES:
            raise ConfigError(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
        return await self.thumbnails.thumbnail(self.storage, self._image_key(name, file), size)

    def _image_key(self, name: str, file: str) -> str:
        check_file_name(file)
        if Path(file).suffix.lower() not in library.IMAGE_SUFFIXES:
            raise ConfigError(f"{file!r} is not an image")
        return layout.dataset_prefix(name) + file

    async def delete_dataset(self, name: str) -> dict[str, Any]:
        n = await asyncio.to_thread(library.delete_dataset, self.storage, name)
        return {"dataset": name, "deleted": n}

    # ---- LoRAs -------------------------------------------------------------------------------------
    async def loras(self) -> list[dict[str, Any]]:
        """LoRAs in the bucket; ``local`` says whether ComfyUI's loras folder has a copy."""
        return (await self.lora_listing())["loras"]

    async def lora_listing(self) -> dict[str, Any]:
        """``{"loras", "problems"}``: entries that cannot be read are skipped and reported."""
        return await asyncio.to_thread(self._loras)

    def _loras(self) -> dict[str, Any]:
        found = library.list_loras(self.storage)
        out = []
        for lora in found.items:
            d = lora.to_dict()
            d["local"] = (self.loras_dir / f"{lora.name}.safetensors").is_file()
            out.append(d)
        return {"loras": out, "problems": [p.to_dict() for p in found.problems]}

    async def lora_metadata(self, name: str) -> dict[str, Any]:
        """The ``__metadata__`` (kohya's ``ss_*`` keys) of a LoRA's safetensors header, plus the
        bucket's ``<name>.json`` sidecar when there is one."""
        return await asyncio.to_thread(self._lora_metadata, name)

    def _lora_metadata(self, name: str) -> dict[str, Any]:
        key = layout.lora_key(name)
        info = self.storage.stat(key)
        cache_key = (key, info.md5 or str(info.generation))
        header = self._header_cache.get(cache_key)
        if header is None:
            # The Storage protocol has no ranged read, so this fetches the whole object (verified);
            # the result is cached per content hash, and a file over the cap is not fetched at all.
            if info.size > MAX_LORA_READ_BYTES:
                raise DatasetError(f"LoRA {name} is {info.size / 1e9:.1f} GB: too large to read its metadata")
            header = parse_safetensors_header(self.storage.read_bytes(key))
            self._header_cache[cache_key] = header
        sidecar: dict[str, Any] = {}
        problems: list[dict[str, Any]] = []
        try:
            sidecar = library.read_lora_sidecar(self.storage, layout.lora_meta_key(name))
        except ObjectNotFound:
            pass
        except StorageError as exc:
            problems.append(Problem.of(layout.lora_meta_key(name), exc).to_dict())
        return {"name": name, "size": info.size, "md5": info.md5, **header, "info": sidecar, "problems": problems}

    async def download_lora(self, name: str) -> dict[str, Any]:
        """Copy a LoRA into the local loras folder: temporary name, checksum check, rename."""
        def download() -> dict[str, Any]:
            path = library.download_lora(self.storage, name, self.loras_dir)
            return {"name": name, "path": str(path), "size": path.stat().st_size}

        return await asyncio.to_thread(download)

    async def delete_lora(self, name: str) -> dict[str, Any]:
        n = await asyncio.to_thread(library.delete_lora, self.storage, name)
        return {"name": name, "deleted": n}

    # ---- runs --------------------------------------------------------------------------------------
    async def runs(self, limit: int = RUN_LIST_LIMIT) -> list[dict[str, Any]]:
        """Runs newest first: this controller's records merged with what the trainers report."""
        return (await self.run_listing(limit))["runs"]

    async def run_listing(self, limit: int = RUN_LIST_LIMIT) -> dict[str, Any]:
        """``{"runs", "problems"}``: a run prefix or status that cannot be read is reported, and
        the run left out unless this controller launched it (then it shows without a status)."""
        found = await asyncio.to_thread(self._runs, limit)
        return {"runs": found.items, "problems": [p.to_dict() for p in found.problems]}

    def _runs(self, limit: int) -> Listed[dict[str, Any]]:
        found: Listed[dict[str, Any]] = Listed()
        known = {r.id: r for r in self.state.list_runs(limit=limit)}
        ids = list(known)
        for prefix in self.storage.list(layout.RUNS, delimiter="/").prefixes:
            run_id = prefix[len(layout.RUNS):].rstrip("/")
            if run_id in known:
                continue
            try:
                ids.append(validate_name(run_id, "run id"))
            except ConfigError as exc:
                found.problems.append(Problem.of(prefix, exc))
        for run_id in ids:
            try:
                found.items.append(self._run_view(run_id, known.get(run_id), strict=True))
            except CorruptRecord as exc:
                found.problems.append(Problem.of(layout.run_key(run_id, run_status.STATUS), exc))
                if run_id in known:
                    found.items.append(self._run_view(run_id, known[run_id]))
        found.items.sort(key=lambda r: r.get("created_at") or r.get("updated_at") or 0, reverse=True)
        del found.items[limit:]
        return found

    async def run(self, run_id: str) -> dict[str, Any]:
        validate_name(run_id, "run id")
        return await asyncio.to_thread(self._run_detail, run_id)

    def _run_detail(self, run_id: str) -> dict[str, Any]:
        record = self.state.get_run(run_id)
        view = self._run_view(run_id, record)
        if record is None and view.get("status") is None:
            raise ObjectNotFound(f"no run {run_id!r}")
        samples = self._sample_listing(run_id)
        view["samples"] = samples.items
        view["problems"] = [p.to_dict() for p in samples.problems]
        return view

    def _run_view(self, run_id: str, record: Any, *, strict: bool = False) -> dict[str, Any]:
        """The run as the sidebar shows it; ``strict`` lets a corrupt ``status.json`` raise
        (listings report it) instead of showing the run without a status."""
        try:
            status = run_status.read_status(self.storage, run_id)
        except CorruptRecord:
            if strict:
                raise
            status = None
        except StorageError:
            status = None
        view: dict[str, Any] = {"id": run_id, "dataset": None, "preset": None, "lora_name": None, "gpu": "",
                                "dph": 0.0, "instance_id": None, "created_at": None, "error": None}
        if record is not None:
            view.update({k: v for k, v in record.to_dict().items() if k not in ("spec", "config_hash")})
        view["status"] = status.to_dict() if status else None
        if status is not None:
            # a run stopped or failed here cannot report any more: the store's end state wins
            ended_here = record is not None and record.state.is_terminal and not status.state.is_terminal
            view.update(state=record.state.value if ended_here else status.state.value, step=status.step, total_steps=status.total_steps,
                        loss=status.loss, eta_seconds=status.eta_seconds, sec_per_step=status.sec_per_step,
                        message=status.message, updated_at=status.updated_at)
            view["error"] = status.error or view["error"]
        view.setdefault("state", RunState.PENDING.value)
        view["live"] = not RunState(view["state"]).is_terminal
        view["cost_usd"] = round(sum(c.usd for c in self.state.costs(run_id=run_id)), 4)
        return view

    async def start_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Quick launch: train ``body["dataset"]`` with a preset, through the same path as the
        Launch node and ``lora-cloud train start`` (idempotent: the same dataset and settings
        re-attach to the live run)."""
        dataset = body.get("dataset")
        if not isinstance(dataset, str) or not dataset:
            raise ConfigError("dataset is required")
        unknown = sorted(set(body) - START_RUN_KEYS)
        if unknown:
            raise ConfigError(f"unknown field {', '.join(map(repr, unknown))[:200]}; known: {', '.join(sorted(START_RUN_KEYS))}")
        lora_type = body.get("lora_type", "character")
        gpu = body.get("gpu") or None
        provider = body.get("provider", "vast")
        interruptible = body.get("interruptible", False)
        if lora_type not in ("character", "style", "concept"):
            raise ConfigError("lora_type must be character, style or concept")
        if provider not in ("vast", "local"):
            raise ConfigError("provider must be vast or local")
        if not isinstance(interruptible, bool):  # "no" is a string, not false
            raise ConfigError("interruptible must be true or false (a JSON boolean)")
        if gpu is not None and not isinstance(gpu, str):
            raise ConfigError("gpu must be a GPU name or \"auto\"")
        if gpu == "auto":
            gpu = None
        req = TrainRequest(dataset=validate_name(dataset, "dataset name"), lora_type=lora_type, gpu=gpu,
                           provider=provider, interruptible=interruptible)
        opener = self.provider_factory if provider == "vast" and self.provider_factory else \
            provider_factory(provider, self.settings)
        result = await start_run(req, settings=self.settings, storage=self.storage, state=self.state,
                                 open_provider=opener, clock=self.clock)
        self.emit(RUN_EVENT, await self.run(result.run_id))
        if not result.attached:
            await self._announce_instances()
        return result.to_dict()

    async def stop_run(self, run_id: str) -> dict[str, Any]:
        """Stop a run on the user's word: destroy its instances, then mark it STOPPED.

        What the trainer already uploaded (checkpoints, samples) stays in the bucket; progress
        since the last checkpoint is lost. The trainer has no "save and stop" channel yet.
        """
        validate_name(run_id, "run id")
        record = await asyncio.to_thread(self.state.get_run, run_id)
        if record is None:
            raise ObjectNotFound(f"no run {run_id!r} was launched from here")
        if record.state.is_terminal:
            raise ConfigError(f"run {run_id} has already ended ({record.state.value})")
        rows = await asyncio.to_thread(self.state.list_instances)
        destroyed = []
        for row in (r for r in rows if r["run_id"] == run_id):
            async with self._provider(row["id"]) as (provider, _row):
                await provider.destroy(row["id"])
                await asyncio.to_thread(self.state.mark_instance_destroyed, provider.name, row["id"], self.clock())
            destroyed.append(row["id"])
        await asyncio.to_thread(self.state.update_run, run_id, state=RunState.STOPPED, error="stopped by the user")
        await asyncio.to_thread(mark_stopped_in_bucket, self.storage, run_id)
        view = await self.run(run_id)
        self.emit(RUN_EVENT, view)
        if destroyed:
            await self._announce_instances()
        return {"id": run_id, "state": view["state"], "destroyed_instances": destroyed}

    async def run_live_in_bucket(self, run_id: str, fresh_s: float = 1800.0) -> bool:
        """True when the run's trainer reported a live state within ``fresh_s`` seconds.

        Reconcile asks this before destroying an instance this controller does not own (another
        laptop may have launched it). An unreadable bucket counts as live: never destroy on doubt.
        """
        try:
            status = await asyncio.to_thread(run_status.read_status, self.storage, run_id)
        except ConfigError:
            return False  # not a run id this pack could have made
        except CorruptRecord:
            return False  # a trainer writes whole objects: garbage is not a live trainer talking
        except StorageError:
            return True
        if status is None or status.state.is_terminal:
            return False
        age = self.clock() - status.updated_at
        return -CLOCK_SKEW_S < age < fresh_s  # a time in the future is not "fresh forever"

    async def run_events(self, run_id: str, since: int = 0) -> dict[str, Any]:
        """Events from index ``since`` on, and the index to ask for next time."""
        validate_name(run_id, "run id")
        if since < 0:
            raise ConfigError("since must be >= 0")
        events = await asyncio.to_thread(run_status.read_events, self.storage, run_id, since)
        return {"events": events, "next": since + len(events)}

    async def run_samples(self, run_id: str) -> list[str]:
        return (await self.sample_listing(run_id))["samples"]

    async def sample_listing(self, run_id: str) -> dict[str, Any]:
        """``{"samples", "problems"}``: image files only; other files and names no route could
        serve are left out and reported (a rented host can write anything there)."""
        validate_name(run_id, "run id")
        found = await asyncio.to_thread(self._sample_listing, run_id)
        return {"samples": found.items, "problems": [p.to_dict() for p in found.problems]}

    def _sample_listing(self, run_id: str) -> Listed[str]:
        found: Listed[str] = Listed()
        prefix = layout.run_key(run_id, "samples/")
        for obj in self.storage.list(prefix).objects:
            name = obj.key[len(prefix):]
            try:
                check_file_name(name, "sample name")
            except ConfigError as exc:
                found.problems.append(Problem.of(obj.key, exc))
                continue
            if not name.lower().endswith(SAMPLE_SUFFIXES) or self.sniffer.format_of(self.storage, obj) is None:
                found.problems.append(Problem(entry=obj.key[:300], message="not an image: left out of the samples"))
                continue
            found.items.append(name)
        return found

    async def run_sample(self, run_id: str, file: str) -> ServedFile:
        """A sample as the browser may get it: typed by its bytes, not its name (media.py)."""
        check_file_name(file)
        key = layout.run_key(run_id, f"samples/{file}")
        data = await asyncio.to_thread(read_media, self.storage, key)
        return served_file(data, file)

    # ---- instances ---------------------------------------------------------------------------------
    async def instances(self, include_destroyed: bool = False) -> list[dict[str, Any]]:
        """Instances this controller created, with uptime and money spent so far."""
        return await asyncio.to_thread(self._instances, include_destroyed)

    def _instances(self, include_destroyed: bool) -> list[dict[str, Any]]:
        now = self.clock()
        ledger = self.state.costs()
        out = []
        for row in self.state.list_instances(include_destroyed=include_destroyed):
            data = json.loads(row.get("data") or "{}")
            costs = [c for c in ledger if c.instance_id == row["id"]]
            spent = sum(c.usd for c in costs)
            started = data.get("started_at") or row["created_at"]
            end = row.get("destroyed_at") or now
            if row["state"] in ("running", "loading", "creating"):
                billed_until = max([c.end for c in costs] + [started])
                spent += max(0.0, now - billed_until) / 3600 * (row["dph_total"] + row["storage_dph"])
            out.append({
                "id": row["id"], "provider": row["provider"], "label": row["label"], "run_id": row["run_id"],
                "state": row["state"], "gpu_name": row["gpu_name"], "num_gpus": data.get("num_gpus", 1),
                "dph_total": row["dph_total"], "interruptible": bool(data.get("interruptible", False)),
                "status_msg": data.get("status_msg", ""), "created_at": row["created_at"],
                "uptime_seconds": max(0.0, end - started), "cost_usd": round(spent, 4),
            })
        return out

    @contextlib.asynccontextmanager
    async def _provider(self, instance_id: str, needs: Capability | None = None):
        """A provider for one of *our* instances: ids this controller did not create are refused."""
        validate_name(instance_id, "instance id")
        rows = await asyncio.to_thread(self.state.list_instances)
        row = next((r for r in rows if r["id"] == instance_id), None)
        if row is None:
            raise ObjectNotFound(f"no live instance {instance_id!r} launched by LoRA Cloud")
        if self.provider_factory is None:
            raise ConfigError("no GPU provider is configured")
        async with self.provider_factory() as provider:
            if provider.name != row["provider"]:
                raise ConfigError(f"instance {instance_id} belongs to {row['provider']}, not {provider.name}")
            if needs is not None and needs not in provider.capabilities:
                raise ConfigError(f"{provider.name} instances cannot {needs.value}")
            yield provider, row

    async def stop_instance(self, instance_id: str) -> dict[str, Any]:
        """Stop (keep the disk; storage still bills). Every open sidebar hears about it."""
        async with self._provider(instance_id, Capability.STOP) as (provider, row):
            await provider.stop(instance_id)
            inst = await provider.get(instance_id)
        if inst is not None:
            await asyncio.to_thread(self.state.put_instance, inst, row["run_id"])
        await self._announce_instances()
        return {"id": instance_id, "state": inst.state.value if inst else "destroyed"}

    async def destroy_instance(self, instance_id: str) -> dict[str, Any]:
        """Destroy (billing ends; the disk is gone, the bucket keeps checkpoints and LoRAs)."""
        async with self._provider(instance_id) as (provider, _row):
            existed = await provider.destroy(instance_id)
            await asyncio.to_thread(self.state.mark_instance_destroyed, provider.name, instance_id, self.clock())
        await self._announce_instances()
        return {"id": instance_id, "destroyed": True, "existed": existed}

    async def instance_logs(self, instance_id: str, tail: int = 200) -> dict[str, Any]:
        if not 1 <= tail <= 5000:
            raise ConfigError("tail must be between 1 and 5000")
        async with self._provider(instance_id, Capability.LOGS) as (provider, _row):
            text = await provider.logs(instance_id, tail)
        return {"id": instance_id, "logs": redact(text)}

    async def _announce_instances(self) -> None:
        self.emit(INSTANCE_EVENT, {"instances": await self.instances()})

    # ---- costs and budgets -------------------------------------------------------------------------
    async def costs(self) -> dict[str, Any]:
        """Spend today, this month (local calendar), per run and per instance, against the budgets."""
        return await asyncio.to_thread(self._costs)

    def _costs(self) -> dict[str, Any]:
        summary = CostLedger(self.state, self.clock).summary()
        budgets = self._budgets()
        cap = budgets["max_month_usd"]
        return {**summary, "budgets": budgets,
                "month_fraction": round(summary["month_usd"] / cap, 4) if cap > 0 else None}

    async def budgets(self) -> dict[str, float]:
        return self._budgets()

    def _budgets(self) -> dict[str, float]:
        return Budgets.from_settings(self.settings).to_dict()

    async def set_budgets(self, changes: dict[str, Any]) -> dict[str, float]:
        """Persist new caps to config.toml (validated first) and tell every open sidebar."""
        if not isinstance(changes, dict) or not changes:
            raise ConfigError(f"give at least one of {', '.join(BUDGET_KEYS)}")
        unknown = sorted(set(changes) - set(BUDGET_KEYS))
        if unknown:
            raise ConfigError(f"unknown budget {', '.join(unknown)}; known: {', '.join(BUDGET_KEYS)}")
        clean: dict[str, str] = {}
        for key, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number")
            clean[key] = str(float(value))
        self.settings = await asyncio.to_thread(self._write_budgets, clean)
        budgets = self._budgets()
        self.emit(BUDGET_EVENT, {"kind": "changed", "budgets": budgets})
        return budgets

    def _write_budgets(self, clean: dict[str, str]) -> Settings:
        Settings.load(self.settings.home, **{k: float(v) for k, v in clean.items()})  # validate all first
        for key, value in clean.items():
            set_value(self.settings.home, key, value)
        return Settings.load(self.settings.home)
