"""This machine as a provider, for users with their own GPU.

``launch`` runs the same container command (``LaunchSpec.onstart``) as a process group on this
machine with the spec's environment, so the trainer entrypoint behaves exactly as on a rented
instance (minus ``CONTAINER_API_KEY``: there is nothing to self-destroy). Each "instance" is a
small JSON record in ``workdir`` (pid, label, log path), so a restarted controller still finds
and can kill what it started. Costs nothing; no stop (a process cannot keep a paused GPU).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from ..errors import ProviderError
from ..models import Instance, InstanceState, Offer
from .base import LABEL_PREFIX, Capability, LaunchSpec, OfferRequest, run_id_from_label


class LocalProvider:
    name = "local"
    capabilities = frozenset({Capability.LOGS})
    account = None  # nothing bills

    def __init__(self, workdir: str | Path, *, gpu_name: str = "local GPU", vram_gb: float = 24.0,
                 ram_gb: float = 64.0, disk_gb: float = 500.0):
        self.workdir = Path(workdir)
        self.offer = Offer(id="local", gpu_name=gpu_name, gpu_ram_gb=vram_gb, cpu_ram_gb=ram_gb, disk_gb=disk_gb,
                           dph_total=0.0, inet_down_mbps=1000.0, reliability=1.0, verified=True, provider="local")

    def _record_path(self, iid: str) -> Path:
        return self.workdir / f"{iid}.json"

    async def search(self, req: OfferRequest) -> list[Offer]:
        o = self.offer
        ok = (o.gpu_ram_gb >= req.min_vram_gb and o.cpu_ram_gb >= req.min_ram_gb and o.disk_gb >= req.min_disk_gb
              and not req.interruptible and (not req.gpu_names or o.gpu_name in req.gpu_names))
        return [o] if ok else []

    async def launch(self, offer: Offer, spec: LaunchSpec) -> Instance:
        if not spec.onstart:
            raise ProviderError("the local provider needs a command to run (LaunchSpec.onstart)")
        return await asyncio.to_thread(self._launch, spec)

    def _launch(self, spec: LaunchSpec) -> Instance:
        iid = f"local-{uuid.uuid4().hex[:10]}"
        wd = self.workdir / iid
        wd.mkdir(parents=True, exist_ok=True)
        log_path = wd / "container.log"
        env = {**os.environ, **{k: str(v) for k, v in spec.env.items()}, "CONTAINER_ID": iid}
        env.pop("CONTAINER_API_KEY", None)
        # the trainer's console may print what its environment holds: readable by this user only
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(["bash", "-c", spec.onstart or ""], cwd=wd, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        record = {"id": iid, "pid": proc.pid, "label": spec.label, "log": str(log_path), "created_at": time.time()}
        self._record_path(iid).write_text(json.dumps(record))
        return self._to_instance(record)

    def _alive(self, pid: int) -> bool:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own child if it finished
            if waited == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _to_instance(self, rec: dict) -> Instance:
        state = InstanceState.RUNNING if self._alive(int(rec["pid"])) else InstanceState.EXITED
        return Instance(id=rec["id"], provider="local", label=rec["label"], state=state, gpu_name=self.offer.gpu_name,
                        created_at=float(rec["created_at"]), run_id=run_id_from_label(rec["label"]))

    def _read(self, iid: str) -> dict | None:
        p = self._record_path(iid)
        return json.loads(p.read_text()) if p.exists() else None

    async def get(self, instance_id: str) -> Instance | None:
        rec = self._read(instance_id)
        return self._to_instance(rec) if rec else None

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        if not self.workdir.exists():
            return []
        recs = [json.loads(p.read_text()) for p in sorted(self.workdir.glob("local-*.json"))]
        return [self._to_instance(r) for r in recs if str(r["label"]).startswith(label_prefix)]

    async def stop(self, instance_id: str) -> None:
        raise ProviderError("the local provider cannot stop and resume; destroy instead")

    async def destroy(self, instance_id: str) -> bool:
        rec = self._read(instance_id)
        if rec is None:
            return False
        pid = int(rec["pid"])
        if self._alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(100):
                if not self._alive(pid):
                    break
                await asyncio.sleep(0.05)
        self._record_path(instance_id).unlink(missing_ok=True)
        return True

    async def logs(self, instance_id: str, tail: int = 1000) -> str:
        rec = self._read(instance_id)
        if rec is None:
            raise ProviderError(f"no local instance {instance_id}")
        text = await asyncio.to_thread(Path(rec["log"]).read_text, errors="replace")
        return "\n".join(text.splitlines()[-tail:]) + "\n"
