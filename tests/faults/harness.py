"""The world a fault scenario runs in, built from real parts:

* the fake vast.ai server as its own process (``python -m tests.fakes.vast``), driven through its
  ``/_fake/`` control routes (:class:`FakeControl`);
* a fresh gcp-storage-emulator bucket, read and written with the real google-cloud-storage client;
* this controller's state store (``<home>/state.db``), seeded as a launch would have left it;
* the controller: ``lora-cloud --json instances reconcile`` through its installed entry point,
  with ``LORA_CLOUD_HOME``, ``LORA_CLOUD_VAST_URL``, ``LORA_CLOUD_VAST_API_KEY`` and
  ``LORA_CLOUD_STORAGE`` in its environment; on a clock running ahead of everyone else's when a
  row asks (Debian's ``faketime``).

:func:`run_scenario` sets a row up, runs its passes, then counts what it observed into
:data:`~tests.faults.registry.OBSERVED` before the row's own checks.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_lora_cloud.models import Instance, InstanceState, Run, RunState, RunStatus
from comfy_lora_cloud.providers.base import run_label, with_bucket_tag
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage.gcs import GcsStorage
from comfy_lora_cloud.storage.identity import ensure_bucket_id
from comfy_lora_cloud.storage.layout import run_key
from comfy_lora_cloud.training.status import read_events, read_status

from .registry import DEFAULT_BUDGETS, OBSERVED, Scenario

API_KEY = "fault-vast-key-0123456789abcdef"
HOUR = 3600.0


def entry_point() -> list[str]:
    exe = Path(sys.executable).parent / "lora-cloud"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "comfy_lora_cloud.cli.main"]


class FakeControl:
    """The fake vast.ai process, through its control routes."""

    def __init__(self, url: str, api_key: str = API_KEY):
        self.url = url
        self.api_key = api_key

    def call(self, verb: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(f"{self.url}/_fake/{verb}", data=json.dumps(body or {}).encode(),
                                     method="POST", headers={"Authorization": f"Bearer {self.api_key}",
                                                             "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def alive(self) -> set[str]:
        return {str(i["id"]) for i in self.call("state")["instances"]}


@dataclass
class World:
    fake: FakeControl
    storage: GcsStorage
    home: Path
    env: dict[str, str]
    now: float = field(default_factory=time.time)
    fates: dict[str, str] = field(default_factory=dict)  # instance id -> "keep" | "die"
    why: dict[str, str] = field(default_factory=dict)
    ends: dict[str, RunState] = field(default_factory=dict)  # runs the guard must end, in the bucket
    may_change: set[str] = field(default_factory=set)  # bucket keys the guard may rewrite
    _store: StateStore | None = None
    _bucket_id: str | None = None

    # ---- the bucket's id -----------------------------------------------------------------------
    @property
    def bucket_id(self) -> str:
        """The scenario bucket's id, as the first launch from it makes it."""
        if self._bucket_id is None:
            self._bucket_id = ensure_bucket_id(self.storage)
        return self._bucket_id

    def tagged(self, ident: str) -> str:
        """``ident`` as a launch from this bucket names it today (``<id>.b<bucket id>``)."""
        return with_bucket_tag(ident, self.bucket_id)

    # ---- the provider --------------------------------------------------------------------------
    def instance(self, run_id: str | None, fate: str, why: str, *, label: str | None = None, age_h: float = 0.0,
                 skew_h: float = 0.0, gpu: str | None = None) -> str:
        """An instance on the fake, running, labelled for ``run_id``; ``fate`` is what the guard
        must do to it: "keep" it billing, or make it "die"."""
        assert fate in ("keep", "die")
        body = {"label": label if label is not None else run_label(run_id or ""), "age_s": age_h * HOUR,
                "skew_s": skew_h * HOUR}
        if gpu:
            body["gpu_name"] = gpu
        row = self.fake.call("instance", body)
        iid = str(row["id"])
        self.fates[iid], self.why[iid] = fate, why
        return iid

    def dph(self, iid: str) -> float:
        return next(i["dph_total"] for i in self.fake.call("state")["instances"] if str(i["id"]) == iid)

    # ---- this controller's state store ---------------------------------------------------------
    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(self.home / "state.db")
        return self._store

    def local_run(self, run_id: str, iid: str | None, *, state: RunState = RunState.TRAINING,
                  seen_h_ago: float = 0.0) -> None:
        """The run as a launch from this controller leaves it: the run row, and its instance first
        seen ``seen_h_ago`` hours ago (on our clock)."""
        self.store.put_run(Run(id=run_id, dataset="cats", preset="character", lora_name=run_id, state=state,
                               instance_id=iid, spec={"label": run_label(run_id)}))
        if iid is not None:
            self.store.put_instance(Instance(id=iid, label=run_label(run_id), run_id=run_id,
                                             state=InstanceState.RUNNING), run_id,
                                    seen_at=self.now - seen_h_ago * HOUR)

    def sql(self, statement: str, *args: Any) -> None:
        """Write the store behind its back, as a bug, a crash or a hand edit would."""
        conn = sqlite3.connect(self.home / "state.db")
        try:
            conn.execute(statement, args)
            conn.commit()
        finally:
            conn.close()

    # ---- the bucket ----------------------------------------------------------------------------
    def status(self, run_id: str, state: RunState = RunState.TRAINING, *, ago_s: float = 5.0, **fields: Any) -> None:
        """A valid status.json, as the run's trainer writes it."""
        st = RunStatus(run_id=run_id, state=state, step=10, total_steps=100, updated_at=self.now - ago_s, **fields)
        self.storage.write_bytes(run_key(run_id, "status.json"), json.dumps(st.to_dict()).encode())

    def raw_status(self, run_id: str, body: bytes | str) -> None:
        self.storage.write_bytes(run_key(run_id, "status.json"), body.encode() if isinstance(body, str) else body)

    def treasure(self, run_ids: list[str]) -> None:
        """What must survive every pass: a LoRA, a dataset, each run's checkpoint and events."""
        self.storage.write_bytes("loras/keep.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " * 64)
        self.storage.write_bytes("datasets/cats/001.png", b"\x89PNG not really" * 32)
        for run_id in run_ids:
            self.storage.write_bytes(run_key(run_id, "checkpoints/step-000100.safetensors"), b"weights" * 128)
            self.storage.write_bytes(run_key(run_id, "events.jsonl"),
                                     b'{"t": 1, "kind": "state", "state": "training"}\n')

    def expect_end(self, run_id: str, state: RunState) -> None:
        """The guard must end ``run_id`` with ``state`` in the bucket (and may rewrite its status)."""
        self.ends[run_id] = state
        self.may_change |= {run_key(run_id, "status.json"), run_key(run_id, "events.jsonl")}

    def snapshot(self) -> dict[str, str | None]:
        return {o.key: o.md5 for o in self.storage.list("").objects}

    def bucket_state(self, run_id: str) -> RunState | None:
        status = read_status(self.storage, run_id)
        return status.state if status else None

    # ---- the controller ------------------------------------------------------------------------
    def reconcile(self, grace_s: float = 0.0, clock_ahead_s: float = 0.0,
                  **env: str) -> tuple[int, dict[str, Any] | None, str]:
        """One guard pass in a real process: (exit code, its JSON result or None, stderr);
        ``clock_ahead_s``: the process's clock runs that far ahead of the bucket's and the
        provider's (``faketime``)."""
        command = entry_point() + ["--json", "instances", "reconcile", "--grace", str(grace_s)]
        if clock_ahead_s:
            command = [faketime(), "-f", f"{clock_ahead_s:+.0f}", *command]
        proc = subprocess.run(command, capture_output=True, text=True, env={**self.env, **env}, timeout=120)
        try:
            result = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            result = None
        return proc.returncode, result, proc.stderr


def faketime() -> str:
    """Debian's ``faketime`` (apt-get install faketime; .ci/run installs it)."""
    exe = shutil.which("faketime")
    if exe is None:
        from tests.fixtures.prerequisites import missing

        missing("faketime (apt-get install faketime) runs a guard pass on a clock that is off")
    return exe


def make_world(fake: FakeControl, bucket: str, home: Path, emulator_url: str, budgets: dict[str, Any]) -> World:
    fake.call("reset")
    env = {k: v for k, v in os.environ.items()}
    env.update({"LORA_CLOUD_HOME": str(home), "LORA_CLOUD_VAST_URL": fake.url, "LORA_CLOUD_VAST_API_KEY": API_KEY,
                "LORA_CLOUD_STORAGE": f"gs://{bucket}", "STORAGE_EMULATOR_HOST": emulator_url, "COLUMNS": "200"})
    for key, value in {**DEFAULT_BUDGETS, **budgets}.items():
        env[f"LORA_CLOUD_{key.upper()}"] = str(value)
    return World(fake=fake, storage=GcsStorage.from_url(f"gs://{bucket}"), home=home, env=env)


def account(world: World, before: dict[str, str | None], name: str) -> tuple[list[str], list[str], list[str]]:
    """Count what one scenario left behind into :data:`OBSERVED`: (billing that should not be,
    wrongly destroyed, bucket objects lost or changed)."""
    alive = world.fake.alive()
    after = world.snapshot()
    undeclared = alive - set(world.fates)
    billing = sorted(i for i, f in world.fates.items() if f == "die" and i in alive) + sorted(undeclared)
    destroyed = sorted(i for i, f in world.fates.items() if f == "keep" and i not in alive)
    lost = sorted(k for k, md5 in before.items() if k not in world.may_change and after.get(k) != md5)
    OBSERVED.scenarios += 1
    OBSERVED.billing_unowned_or_over_budget += len(billing)
    OBSERVED.live_runs_destroyed += len(destroyed)
    OBSERVED.objects_lost += len(lost)
    if billing or destroyed or lost:
        OBSERVED.failures.append(name)
    return billing, destroyed, lost


def run_scenario(sc: Scenario, world: World) -> list[dict[str, Any]]:
    """Set up, run the passes, count what was observed, then the row's checks."""
    sc.setup(world)
    before = world.snapshot()
    results: list[dict[str, Any]] = []
    exits: list[tuple[int, str]] = []
    for i in range(sc.passes):
        code, result, stderr = world.reconcile(sc.grace_s, sc.clock_ahead_s, **sc.env)
        exits.append((code, stderr))
        results.append({**(result or {}), "stderr": stderr})
        if sc.between is not None and i + 1 < sc.passes:
            sc.between(world)
    billing, destroyed, lost = account(world, before, sc.name)
    problems = [p for r in results for p in r.get("problems", [])]
    for i, (code, stderr) in enumerate(exits):
        assert code == sc.expect_exit, f"pass {i + 1} exited {code}, wanted {sc.expect_exit}\n{stderr}"
        assert "Traceback" not in stderr, stderr
    assert not billing, f"left billing: {[(i, world.why.get(i, 'undeclared')) for i in billing]}\n{results}"
    assert not destroyed, f"wrongly destroyed: {[(i, world.why[i]) for i in destroyed]}\n{results}"
    assert not lost, f"objects lost or changed: {lost}"
    for run_id, state in world.ends.items():
        assert world.bucket_state(run_id) is state, f"run {run_id} in the bucket: {world.bucket_state(run_id)}"
        assert any(e.get("state") == state.value for e in read_events(world.storage, run_id)), run_id
    if sc.check is not None:
        sc.check(world, results)
    for p in problems:  # every problem names what it is about, in words a user can act on
        assert p["kind"] and p["subject"] and p["message"], p
    return results
