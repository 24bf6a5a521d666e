"""Publishing a trained LoRA: what made it (:func:`lora_info`, its cost from the run's attempts),
written into its header, then uploaded under a name no other run owns, verified against the
trained file, its JSON written and the run marked done (:class:`LoraPublisher`).

The instance, and with it the only copy of the LoRA, is destroyed after this, so the upload is
verified and tried more than once."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ChecksumMismatch, LoraCloudError, PreconditionFailed, StorageError
from ..models import RunState
from ..storage.base import Checksums, Storage, checksum_file
from ..storage.layout import lora_key, lora_meta_key
from ..training.lora_meta import LoraInfo, header_metadata, iso_date, stamp_safetensors
from ..training.presets import Preset, StepPlan
from ..training.spec import RunSpec
from ..training.status import StatusReporter

log = logging.getLogger(__name__)


def lora_info(spec: RunSpec, preset: Preset, plan: StepPlan, images: int, report: StatusReporter,
              now: float) -> LoraInfo:
    """What made this LoRA: the run's spec and preset, what kohya reported, what it cost."""
    status = report.status

    def num(key: str, kind: type) -> Any:
        value = preset.training.get(key, preset.dataset.get(key))
        try:
            return kind(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    gpu, dph, cost = attempt_costs(report.events, now)
    return LoraInfo(
        run_id=spec.run_id, preset=preset.name, lora_type=spec.lora_type, dataset=spec.dataset,
        trigger=spec.trigger, overrides=dict(spec.overrides), images=images,
        steps=status.step or plan.total_steps, epochs=plan.epochs, rank=num("network_dim", int),
        alpha=num("network_alpha", float), learning_rate=num("learning_rate", float),
        resolution=num("resolution", int), final_loss=status.loss, gpu=gpu, dph=dph, cost_usd=cost,
        created_at=now, date=iso_date(now))


def attempt_costs(events: list[dict[str, Any]], now: float) -> tuple[str | None, float | None, float | None]:
    """(GPU, $/hr) of the last attempt and an estimate of the whole run's cost: each attempt's
    $/hr over the time from its ``attempt`` event (written by the controller as it rents) to
    the next one, or to now. ``None`` when the run's events name no attempt."""
    attempts = [e for e in events if e.get("kind") == "attempt"
                and isinstance(e.get("t"), (int, float)) and isinstance(e.get("dph"), (int, float))]
    if not attempts:
        return None, None, None
    cost = 0.0
    for a, nxt in zip(attempts, [*attempts[1:], None]):
        end = nxt["t"] if nxt is not None else now
        cost += a["dph"] * max(end - a["t"], 0.0) / 3600
    gpu = attempts[-1].get("gpu")
    return (gpu if isinstance(gpu, str) else None), float(attempts[-1]["dph"]), round(cost, 4)


@dataclass
class LoraPublisher:
    """Puts one run's trained LoRA into the bucket and reports it there."""

    storage: Storage
    spec: RunSpec
    report: StatusReporter
    log_path: Path  # the trainer's log, uploaded with the final status

    def publish(self, lora: Path, info: LoraInfo, total_steps: int) -> RunState:
        """Write what made the LoRA into its header, upload it under a name no other run owns,
        verify it, write its JSON, mark done."""
        self.report.update(state=RunState.UPLOADING, message="uploading the LoRA", step=total_steps, eta_seconds=None)
        stamp_safetensors(lora, header_metadata(info))  # before the checksum: the bucket gets this file
        local = checksum_file(lora)
        name = self.upload_verified(lora, local)
        meta = {
            "name": name, **info.to_dict(), "vram_gb": self.spec.vram_gb, "size": local.size, "md5": local.md5,
            "crc32c": local.crc32c,
            "sample_images": [e["key"] for e in self.report.events if e.get("kind") == "sample" and "key" in e],
        }
        self.storage.write_bytes(lora_meta_key(name), json.dumps(meta, indent=1).encode(),
                                 content_type="application/json")
        self.report.event("lora", key=lora_key(name), md5=local.md5, size=local.size)
        self.report.update(state=RunState.DONE, lora=lora_key(name), message="done", error=None)
        self.report.upload_log(self.log_path, force=True)
        self.report.flush()
        return RunState.DONE

    def upload_verified(self, lora: Path, local: Checksums, attempts: int = 3) -> str:
        """Upload and verify, a few times: the instance (and the only copy of the LoRA) is
        destroyed after this, so a transfer error deserves more than one try. Returns the name."""
        name, ours = self._lora_name()
        last: StorageError | None = None
        for attempt in range(1, attempts + 1):
            try:
                try:  # "only if absent" unless it is ours: two runs never overwrite each other
                    info = self.storage.upload_file(lora, lora_key(name), checksums=local,
                                                    if_generation_match=None if ours else 0)
                except PreconditionFailed:
                    name = self._suffixed(name)
                    info = self.storage.upload_file(lora, lora_key(name), checksums=local)
                ours = True
                remote = self.storage.stat(lora_key(name))
                if remote.md5 != local.md5 or remote.size != local.size or (info.md5 and info.md5 != local.md5):
                    raise ChecksumMismatch(f"the uploaded LoRA {name} does not match the trained file")
                return name
            except StorageError as exc:
                last = exc
                log.warning("LoRA upload attempt %d/%d failed: %s", attempt, attempts, exc.message)
                self.report.event("upload_retry", attempt=attempt, reason=exc.message)
        assert last is not None
        raise last

    def _lora_name(self) -> tuple[str, bool]:
        """(name, whether this run already owns it): the spec's name unless another run's LoRA
        has it, then ``<name>-<run id>``."""
        name = self.spec.lora_name
        try:
            meta = json.loads(self.storage.read_bytes(lora_meta_key(name)))
            # bucket content is untrusted: a sidecar that is not an object names no owner
            owner = meta.get("run_id") if isinstance(meta, dict) else "unknown"
        except LoraCloudError:
            owner = None if not self.storage.exists(lora_key(name)) else "unknown"
        except (ValueError, RecursionError):
            owner = "unknown"
        if owner is None:
            return name, False
        return (name, True) if owner == self.spec.run_id else (self._suffixed(name), False)

    def _suffixed(self, name: str) -> str:
        suffix = self.spec.run_id[-40:]
        return f"{name[:100 - len(suffix) - 1]}-{suffix}"  # names are at most 100 characters
