"""The fake vast.ai market and its instances, independent of HTTP.

Time comes from an injectable clock. :meth:`FakeVastState.tick` walks every instance through its
scheduled events in time order (created -> loading -> running, outbid pauses, host outages) and
bills each span at the price of the state it was in, so a clock that jumps an hour still bills the
3 seconds of loading as loading. All public methods take the lock: HTTP handlers run on the
server's thread while tests poke faults from theirs.
"""

from __future__ import annotations

import copy
import math
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .offer_book import load_book


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start: float | None = None):
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeInstance:
    id: int
    offer: dict[str, Any]
    api_key: str
    label: str | None
    image: str
    env: dict[str, str]
    disk: float
    onstart: str | None
    runtype: str
    is_bid: bool
    price: float | None
    created_at: float
    actual: str | None = None
    intended: str = "running"
    status_msg: str = ""
    phase_at: float = 0.0  # when the current phase (created/loading) began
    start_date: float = 0.0
    gpu_usd: float = 0.0
    disk_usd: float = 0.0
    billed_to: float = 0.0
    running_since: float | None = None
    ssh_port: int | None = None
    pull_error: str | None = None
    outbid_until: float | None = None  # math.inf: outbid for good (it never resumes)
    outbid_plan: tuple[int, float | None, float] | None = None  # (at kohya step, resume after, SIGTERM grace)
    workdir: Path | None = None
    offline_until: float | None = None
    offline_kind: str = "offline"
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    log_lines: list[str] = field(default_factory=list)
    ssh_keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gpu_dph(self) -> float:
        return float(self.price) if self.is_bid and self.price is not None else float(self.offer["dph_base"])

    @property
    def disk_dph(self) -> float:
        return float(self.offer["storage_cost"]) * self.disk / 720.0

    @property
    def visible_status(self) -> str | None:
        if self.offline_until is not None:
            return self.offline_kind
        return self.actual


class FakeVastState:
    def __init__(
        self,
        api_key: str,
        *,
        clock: Callable[[], float] = time.time,
        offers: list[dict[str, Any]] | None = None,
        credit: float = 100.0,
        created_s: float = 1.0,
        loading_s: float = 5.0,
        run_processes: bool = False,
        workdir: str | Path | None = None,
        image_env: dict[str, str] | None = None,
        ssh_endpoint: tuple[str, int] | None = None,
        authorized_keys: str | Path | None = None,
    ):
        self.api_key = api_key
        self.clock = clock
        self.lock = threading.RLock()
        self.offers: dict[int, dict[str, Any]] = {int(o["id"]): dict(o) for o in (offers or load_book())}
        self.rented: set[int] = set()
        self.instances: dict[int, FakeInstance] = {}
        self.destroyed: dict[int, FakeInstance] = {}
        self.credit = credit
        self.created_s = created_s
        self.loading_s = loading_s
        self.run_processes = run_processes
        self.workdir = Path(workdir) if workdir else None
        # what the Docker image itself sets (ENV lines): the process sees it under the request's env
        self.image_env = dict(image_env or {})
        # a real sshd the tests run: running instances report it as their ssh_host/ssh_port, and
        # the keys they hold (the account's at creation, plus attached ones) are what it accepts
        self.ssh_endpoint = ssh_endpoint
        self.authorized_keys = Path(authorized_keys) if authorized_keys else None
        self.ssh_keys: list[dict[str, Any]] = []
        self.log_results: dict[str, list[Any]] = {}  # token -> [text, 404s still to give]
        self.next_id = 9_000_000
        self.next_key_id = 100
        self.created_count = 0
        self.pull_error_next: str | None = None
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API call, for tests
        self.stoppers: list[threading.Thread] = []  # SIGTERM-then-SIGKILL of preempted containers

    # ---- clock and timeline ---------------------------------------------------------------
    def now(self) -> float:
        return float(self.clock())

    def tick(self) -> None:
        with self.lock:
            now = self.now()
            for inst in list(self.instances.values()):
                self._advance_instance(inst, now)
            if self.credit <= 0:
                for inst in self.instances.values():
                    if inst.actual in ("running", "loading"):
                        self._pause(inst, "stopped", "credit balance is zero: instance stopped")

    def _next_event(self, inst: FakeInstance) -> float | None:
        times = []
        if inst.offline_until is not None:
            times.append(inst.offline_until)
        elif inst.outbid_until is not None:
            times.append(inst.outbid_until)
        elif inst.intended == "running":
            if inst.actual is None:
                times.append(inst.phase_at + self.created_s)
            elif inst.actual == "created" and not inst.pull_error:
                times.append(inst.phase_at)
            elif inst.actual == "loading":
                times.append(inst.phase_at + self.loading_s)
        return min(times) if times else None

    def _advance_instance(self, inst: FakeInstance, now: float) -> None:
        self._maybe_outbid(inst, now)
        while True:
            self._poll_process(inst)
            t = self._next_event(inst)
            if t is None or t > now:
                self._bill(inst, now)
                return
            self._bill(inst, t)
            self._fire(inst, t)

    def _bill(self, inst: FakeInstance, until: float) -> None:
        span = until - inst.billed_to
        if span <= 0:
            return
        if inst.offline_until is None:
            usd = inst.disk_dph * span / 3600.0
            if inst.actual == "running":
                usd += inst.gpu_dph * span / 3600.0
                inst.gpu_usd += inst.gpu_dph * span / 3600.0
            inst.disk_usd += inst.disk_dph * span / 3600.0
            self.credit -= usd
        inst.billed_to = until

    def _fire(self, inst: FakeInstance, t: float) -> None:
        if inst.offline_until is not None and t >= inst.offline_until:
            inst.offline_until = None
            return
        if inst.outbid_until is not None and t >= inst.outbid_until:
            inst.outbid_until = None
            if inst.intended == "running":
                inst.actual, inst.phase_at, inst.status_msg = "loading", t, "resumed after outbid"
            return
        if inst.actual is None:
            inst.actual, inst.phase_at = "created", t
            if inst.pull_error:
                inst.status_msg = inst.pull_error
            else:
                inst.actual, inst.status_msg = "loading", f"pulling {inst.image}"
            return
        if inst.actual == "created":
            inst.actual, inst.phase_at = "loading", t
            return
        if inst.actual == "loading":
            inst.actual, inst.running_since = "running", t
            inst.ssh_port = self.ssh_endpoint[1] if self.ssh_endpoint else 20000 + inst.id % 40000
            inst.status_msg = f"success, running {inst.image}/ssh"
            inst.log_lines.append(f"[{t:.0f}] container started")
            self.write_authorized_keys()
            self._start_process(inst)

    def _pause(self, inst: FakeInstance, actual: str, msg: str) -> None:
        self._kill_process(inst)
        inst.actual, inst.status_msg, inst.running_since = actual, msg, None

    def write_authorized_keys(self) -> None:
        """What the test sshd accepts: the keys of every running instance (vast.ai copies the
        account's keys into an instance when it is created; attached keys are added)."""
        if self.authorized_keys is None:
            return
        with self.lock:
            keys = {str(k.get("public_key") or k.get("key") or "").strip()
                    for inst in self.instances.values() if inst.actual == "running" for k in inst.ssh_keys}
        tmp = self.authorized_keys.with_name(self.authorized_keys.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in sorted(keys) if k))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.authorized_keys)

    # ---- processes --------------------------------------------------------------------------
    def _start_process(self, inst: FakeInstance) -> None:
        if not self.run_processes or not inst.onstart:
            return
        base = self.workdir or Path(os.environ.get("TMPDIR", "/tmp"))
        wd = base / f"instance-{inst.id}"  # the instance's disk: kept while it is stopped
        wd.mkdir(parents=True, exist_ok=True)
        inst.workdir = wd
        inst.log_path = wd / "container.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(wd), **self.image_env}
        env.update({k: str(v) for k, v in inst.env.items() if not k.startswith("-")})
        env["CONTAINER_ID"] = str(inst.id)
        env["CONTAINER_API_KEY"] = inst.api_key
        with open(inst.log_path, "ab") as log:
            inst.process = subprocess.Popen(
                ["bash", "-c", inst.onstart], cwd=wd, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def _poll_process(self, inst: FakeInstance) -> None:
        p = inst.process
        if p is None or p.poll() is None:
            return
        inst.process = None
        if p.returncode != 0 or inst.runtype == "args":
            inst.actual, inst.running_since = "exited", None
            inst.status_msg = f"container exited with code {p.returncode}"

    def _kill_process(self, inst: FakeInstance, grace_s: float = 0.0) -> None:
        """Kill the container's processes: SIGKILL at once, or (``grace_s``) as ``docker stop``
        does, SIGTERM first and SIGKILL after the grace period, from a thread of its own so that
        the fake answers calls meanwhile."""
        p = inst.process
        inst.process = None
        if p is None or p.poll() is not None:
            return
        if grace_s > 0:
            stopper = threading.Thread(target=_stop_container, args=(p, grace_s), daemon=True)
            self.stoppers.append(stopper)
            stopper.start()
            return
        _signal_group(p, signal.SIGKILL)
        p.wait(timeout=10)

    def process_of(self, instance_id: int) -> subprocess.Popen | None:
        with self.lock:
            inst = self.instances.get(instance_id)
            return inst.process if inst else None

    # ---- auth ---------------------------------------------------------------------------------
    def instance_for_key(self, key: str) -> int | None:
        with self.lock:
            for inst in self.instances.values():
                if secrets.compare_digest(inst.api_key, key):
                    return inst.id
        return None

    # ---- offers -------------------------------------------------------------------------------
    def offer_view(self, offer: dict[str, Any], *, bid: bool, storage_gb: float) -> dict[str, Any]:
        o = copy.deepcopy(offer)
        disk_hour = o["storage_cost"] * storage_gb / 720.0
        gpu = o["min_bid"] if bid else o["dph_base"]
        o.update({
            "is_bid": bid,
            "dph_total": round(gpu + disk_hour, 6),
            "verification": "verified" if o["verified"] else "unverified",
            "dlperf_per_dphtotal": round(o["dlperf"] / max(gpu + disk_hour, 1e-6), 3),
            "flops_per_dphtotal": round(o["dlperf"] * 2 / max(gpu + disk_hour, 1e-6), 3),
            "total_flops": round(o["dlperf"] * 2, 2),
            "score": round(o["dlperf"] * o["reliability"], 3),
            "start_date": self.now(),
            "end_date": self.now() + o["duration"],
            "rentable": o["id"] not in self.rented,
            "rented": o["id"] in self.rented,
            "cpu_cores": int(o["cpu_cores_effective"]),
            "search": {"gpuCostPerHour": gpu, "diskHour": disk_hour, "totalHour": gpu + disk_hour,
                       "discountTotalHour": 0.0, "discountedTotalPerHour": gpu + disk_hour},
        })
        return o

    def search(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        q = dict(query)
        order = q.pop("order", [["score", "desc"]])
        kind = q.pop("type", "on-demand")
        limit = q.pop("limit", None)
        storage = float(q.pop("allocated_storage", 5.0) or 5.0)
        q.pop("disable_bundling", None)
        q.pop("extra_ids", None)
        bid = kind in ("bid", "interruptible")
        with self.lock:
            rows = [self.offer_view(o, bid=bid, storage_gb=storage) for o in self.offers.values()]
        rows = [r for r in rows if all(matches(r.get(_alias(k)), cond) for k, cond in q.items())]
        for col, direction in reversed([(_alias(c[0]), c[1] if len(c) > 1 else "asc") for c in order]):
            rows.sort(key=lambda r: _sort_key(r.get(col)), reverse=str(direction).lower() == "desc")
        if limit is not None:
            rows = rows[: int(coerce(limit))]
        return rows

    # ---- instances ----------------------------------------------------------------------------
    def create(self, offer_id: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Rent ``offer_id``. Returns (HTTP status, JSON body)."""
        with self.lock:
            offer = self.offers.get(offer_id)
            if offer is None:
                return 404, {"success": False, "error": "no_such_ask", "ask_id": offer_id,
                             "msg": f"Instance type by id {offer_id} is not available."}
            if offer_id in self.rented:
                return 410, {"success": False, "error": "no_such_ask", "ask_id": offer_id,
                             "msg": f"Instance type by id {offer_id} is no longer available."}
            price = body.get("price")
            if price is not None:
                try:
                    price = float(price)
                except (TypeError, ValueError):
                    return 400, {"success": False, "error": "invalid_price", "ask_id": offer_id, "msg": "bad price"}
                if not 0.001 <= price <= 128:
                    return 400, {"success": False, "error": "invalid_price", "ask_id": offer_id,
                                 "msg": "price must be between 0.001 and 128"}
            disk = float(body.get("disk") or 10)
            if disk > float(offer["disk_space"]):
                return 400, {"success": False, "error": "invalid_args", "ask_id": offer_id,
                             "msg": f"disk {disk} GB exceeds the {offer['disk_space']} GB available"}
            env = body.get("env") or {}
            if not isinstance(env, dict):
                return 400, {"success": False, "error": "invalid_args", "ask_id": offer_id, "msg": "env must be an object"}
            label = body.get("label")
            if label is not None and len(str(label)) > 1024:
                return 400, {"success": False, "error": "invalid_args", "ask_id": offer_id, "msg": "label too long"}
            now = self.now()
            self.next_id += 1
            iid = self.next_id
            inst = FakeInstance(
                id=iid, offer=offer, api_key=secrets.token_hex(32), label=label, image=str(body.get("image") or ""),
                env={str(k): str(v) for k, v in env.items()}, disk=disk, onstart=body.get("onstart"),
                runtype=str(body.get("runtype") or "ssh"), is_bid=price is not None, price=price,
                created_at=now, phase_at=now, start_date=now, billed_to=now,
                intended="stopped" if body.get("target_state") == "stopped" else "running",
                ssh_keys=[dict(k) for k in self.ssh_keys],
            )
            if self.pull_error_next:
                inst.pull_error, self.pull_error_next = self.pull_error_next, None
            self.instances[iid] = inst
            self.rented.add(offer_id)
            self.created_count += 1
            return 200, {"success": True, "new_contract": iid, "instance_api_key": inst.api_key}

    def get(self, iid: int) -> FakeInstance | None:
        with self.lock:
            return self.instances.get(iid)

    def set_state(self, iid: int, state: str) -> bool:
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None:
                return False
            if state == "stopped":
                inst.intended = "stopped"
                self._pause(inst, "stopped", "stopped by user")
            elif state == "running":
                inst.intended = "running"
                if inst.outbid_until is None and inst.actual not in ("running", "loading", None):
                    inst.actual, inst.phase_at, inst.status_msg = "loading", self.now(), "scheduling"
            return True

    def destroy(self, iid: int) -> bool:
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None:
                return False
            self._advance_instance(inst, self.now())
            self._kill_process(inst)
            del self.instances[iid]
            self.destroyed[iid] = inst
            self.rented.discard(int(inst.offer["id"]))
            self.write_authorized_keys()
            return True

    def instance_row(self, inst: FakeInstance) -> dict[str, Any]:
        o = inst.offer
        now = self.now()
        running = inst.actual == "running" and inst.offline_until is None
        row = {
            "id": inst.id, "machine_id": o["machine_id"], "host_id": o["host_id"],
            "actual_status": inst.visible_status, "intended_status": inst.intended,
            "cur_state": "running" if inst.actual in ("running", "loading") else "stopped",
            "next_state": "running" if inst.intended == "running" else "stopped",
            "status_msg": inst.status_msg, "label": inst.label,
            "image_uuid": inst.image, "image_runtype": inst.runtype, "image_args": [], "onstart": inst.onstart,
            "extra_env": [[k, v] for k, v in inst.env.items()],
            "template_id": None, "template_hash_id": None, "template_name": None,
            "num_gpus": o["num_gpus"], "gpu_name": o["gpu_name"], "gpu_ram": o["gpu_ram"],
            "gpu_totalram": o["gpu_total_ram"], "gpu_util": 0.0 if running else None,
            "gpu_temp": 40.0 if running else None, "gpu_arch": "nvidia",
            "cpu_name": "AMD EPYC", "cpu_cores": int(o["cpu_cores_effective"]),
            "cpu_cores_effective": o["cpu_cores_effective"], "cpu_ram": o["cpu_ram"], "cpu_util": 0.0,
            "mem_usage": 0.0, "mem_limit": o["cpu_ram"] / 1000.0, "vmem_usage": 0.0,
            "disk_space": inst.disk, "disk_usage": 0.0, "disk_util": 0.0, "disk_bw": o["disk_bw"],
            "inet_up": o["inet_up"], "inet_down": o["inet_down"],
            "inet_up_cost": o["inet_up_cost"], "inet_down_cost": o["inet_down_cost"],
            "inet_up_billed": 0.0, "inet_down_billed": 0.0,
            "dph_base": inst.gpu_dph, "dph_total": round(inst.gpu_dph + inst.disk_dph, 6),
            "storage_cost": o["storage_cost"], "storage_total_cost": round(inst.disk_dph, 6),
            "instance": {"gpuCostPerHour": inst.gpu_dph if running else 0.0, "diskHour": inst.disk_dph,
                         "totalHour": (inst.gpu_dph if running else 0.0) + inst.disk_dph},
            "search": {"gpuCostPerHour": inst.gpu_dph, "diskHour": inst.disk_dph,
                       "totalHour": inst.gpu_dph + inst.disk_dph},
            "is_bid": inst.is_bid, "min_bid": o["min_bid"],
            "start_date": inst.start_date, "end_date": inst.start_date + o["duration"],
            "duration": now - inst.start_date,
            "uptime_mins": round((now - inst.running_since) / 60.0, 2) if inst.running_since else None,
            "reliability2": o["reliability"], "verification": "verified" if o["verified"] else "unverified",
            "geolocation": o["geolocation"], "public_ipaddr": o["public_ipaddr"] if running else None,
            "ssh_host": (self.ssh_endpoint[0] if self.ssh_endpoint else f"ssh{1 + inst.id % 9}.vast.ai")
            if running else None,
            "ssh_port": inst.ssh_port if running else None, "ssh_idx": str(1 + inst.id % 9),
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(inst.ssh_port)}]} if running else None,
            "direct_port_start": 40000, "direct_port_end": 40100, "direct_port_count": o["direct_port_count"],
            "local_ipaddrs": "10.0.0.2 172.17.0.1", "machine_dir_ssh_port": None,
            "jupyter_token": "", "client_run_time": 0.0, "host_run_time": 0.0,
            "compute_cap": o["compute_cap"], "cuda_max_good": o["cuda_max_good"], "driver_version": o["driver_version"],
            "pcie_bw": o["pcie_bw"], "external": False, "hosting_type": o["hosting_type"],
            "time_remaining": "", "time_remaining_isbid": "", "logo": "/static/logos/vastai_small2.png",
            "rentable": True, "webpage": None, "vmem_usage_gb": 0.0,
        }
        return row

    # ---- faults ---------------------------------------------------------------------------------
    def fail_next_pull(self, msg: str = "Error response from daemon: OCI runtime create failed: exec: no such file") -> None:
        with self.lock:
            self.pull_error_next = msg

    def outbid(self, iid: int, seconds: float | None, *, grace_s: float = 0.0, at_step: int | None = None) -> None:
        """A higher bid takes the GPUs: processes die, status stopped, back after ``seconds``
        (None: never; the instance stays stopped until destroyed). ``grace_s``: the processes
        get SIGTERM and that long before SIGKILL (0: SIGKILL at once). ``at_step``: not now, but
        once the instance's trainer reports that overall kohya step (tests/fakes/fake_kohya.py's
        FAKE_KOHYA_STEP_FILE, read as ``kohya-step`` in the instance's folder)."""
        with self.lock:
            inst = self.instances[iid]
            if at_step is not None:
                inst.outbid_plan = (int(at_step), seconds, grace_s)
                return
            self._advance_instance(inst, self.now())
            self._outbid_now(inst, seconds, grace_s)

    def regain(self, iid: int) -> None:
        """The higher bid went away: an outbid instance resumes now (loading, then running, its
        on-start command run again on the same disk)."""
        with self.lock:
            inst = self.instances[iid]
            if inst.outbid_until is not None:
                inst.outbid_until = self.now()
                self._advance_instance(inst, self.now())

    def _outbid_now(self, inst: FakeInstance, seconds: float | None, grace_s: float) -> None:
        self._kill_process(inst, grace_s)
        inst.actual, inst.running_since = "stopped", None
        inst.status_msg = "outbid: GPUs taken by a higher bid"
        inst.outbid_until = math.inf if seconds is None else self.now() + seconds
        inst.outbid_plan = None

    def _maybe_outbid(self, inst: FakeInstance, now: float) -> None:
        plan = inst.outbid_plan
        if plan is None or inst.actual != "running" or inst.workdir is None:
            return
        try:
            step = int((inst.workdir / "kohya-step").read_text())
        except (OSError, ValueError):
            return
        if step >= plan[0]:
            self._bill(inst, now)
            self._outbid_now(inst, plan[1], plan[2])

    def kohya_step(self, iid: int) -> int:
        """The overall kohya step the instance's trainer last reported (0: none yet)."""
        with self.lock:
            inst = self.instances.get(iid) or self.destroyed.get(iid)
        try:
            return int((inst.workdir / "kohya-step").read_text()) if inst and inst.workdir else 0
        except (OSError, ValueError):
            return 0

    def host_offline(self, iid: int, seconds: float, kind: str = "offline") -> None:
        with self.lock:
            inst = self.instances[iid]
            self._advance_instance(inst, self.now())
            inst.offline_until, inst.offline_kind = self.now() + seconds, kind

    def exit_with_error(self, iid: int, msg: str) -> None:
        with self.lock:
            inst = self.instances[iid]
            self._advance_instance(inst, self.now())
            self._pause(inst, "exited", msg)

    def shutdown(self) -> None:
        with self.lock:
            for inst in list(self.instances.values()):
                self._kill_process(inst)
        for stopper in self.stoppers:
            stopper.join(30)

    # ---- charges ---------------------------------------------------------------------------------
    def charges(self, t0: float, t1: float) -> list[dict[str, Any]]:
        with self.lock:
            out = []
            for inst in list(self.instances.values()) + list(self.destroyed.values()):
                end = inst.billed_to
                if end < t0 or inst.created_at > t1:
                    continue
                out.append({
                    "start": inst.created_at, "end": end, "type": "instance", "source": f"instance-{inst.id}",
                    "description": f"{inst.offer['gpu_name']} x{inst.offer['num_gpus']} instance {inst.id}",
                    "amount": round(inst.gpu_usd + inst.disk_usd, 6),
                    "metadata": {"label": inst.label, "template_id": None, "instance_id": inst.id},
                    "items": [
                        {"type": "gpu", "amount": round(inst.gpu_usd, 6), "start": inst.created_at, "end": end,
                         "description": f"{inst.gpu_usd / max(inst.gpu_dph, 1e-9):.3f} hours at ${inst.gpu_dph:.3f}/hour"},
                        {"type": "disk", "amount": round(inst.disk_usd, 6), "start": inst.created_at, "end": end,
                         "description": f"{inst.disk:.0f} GB storage"},
                    ],
                })
            return out


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def _stop_container(p: subprocess.Popen, grace_s: float) -> None:
    _signal_group(p, signal.SIGTERM)
    try:
        p.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(p, signal.SIGKILL)  # what is left of the group (kohya, if the trainer left it)
    p.wait(timeout=10)


# ---- filter semantics ---------------------------------------------------------------------------
_ALIASES = {"dph": "dph_total", "cuda_vers": "cuda_max_good", "dlperf_usd": "dlperf_per_dphtotal",
            "flops_usd": "flops_per_dphtotal", "reliability2": "reliability"}


def _alias(col: str) -> str:
    return _ALIASES.get(col, col)


def coerce(v: Any) -> Any:
    """The CLI sends numbers as strings; booleans too sometimes."""
    if isinstance(v, str):
        s = v.strip()
        if s.lower() in ("true", "false"):
            return s.lower() == "true"
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            return v
    return v


def _sort_key(v: Any) -> tuple:
    if v is None:
        return (0, 0)
    if isinstance(v, (int, float, bool)):
        return (1, float(v))
    return (2, str(v))


def _eq(a: Any, b: Any) -> bool:
    b = coerce(b)
    if isinstance(a, str) and isinstance(b, str) and a.endswith(", " + b):  # geolocation "Texas, US" eq "US"
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def matches(value: Any, cond: Any) -> bool:
    if not isinstance(cond, dict):
        return _eq(value, cond)
    for op, arg in cond.items():
        if arg is None:
            continue
        if op in ("eq", "=="):
            ok = _eq(value, arg)
        elif op in ("neq", "!="):
            ok = not _eq(value, arg)
        elif op in ("in", "notin", "nin"):
            items = arg if isinstance(arg, list) else [arg]
            hit = any(_eq(value, x) for x in items)
            ok = hit if op == "in" else not hit
        elif op in ("gt", "gte", "lt", "lte"):
            if value is None:
                return False
            b = coerce(arg)
            try:
                a, b = float(value), float(b)
            except (TypeError, ValueError):
                return False
            ok = {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]
        else:
            ok = True
        if not ok:
            return False
    return True
