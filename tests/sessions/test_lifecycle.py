"""A session's end on the whole stack: the image's own idle stop and hard deadline destroy the
instance (with vast.ai's per-instance key), and a controller killed mid-start is reconciled by the
next guard pass with nothing left billing."""

from __future__ import annotations

import json
import os
import signal

from comfy_lora_cloud.providers.base import bucket_tag, session_label
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage.identity import read_bucket_id

from .conftest import flux_workflow, wait_for


def test_idle_minutes_and_the_deadline_destroy_the_instance(stack, tmp_path):
    # 3 s without a prompt; no --max-hours: the session_max_hours setting, not the runs' max_run_hours
    idle = stack.json("comfy", "start", "--idle-minutes", "0.05", LORA_CLOUD_SESSION_MAX_HOURS="6",
                      LORA_CLOUD_MAX_RUN_HOURS="4")
    assert idle["max_hours"] == 6
    wait_for(lambda: not stack.live_instances(), what="the idle session to destroy itself")
    [gone] = [i for i in stack.fake.state.destroyed.values() if i.label.endswith(idle["id"])]
    assert gone.env["LORA_CLOUD_MAX_HOURS"] == "6"  # the image's own deadline
    # its label says which bucket it lives in (the bucket's id, not its name)
    assert bucket_tag(idle["id"]) == read_bucket_id(stack.storage) and gone.label == session_label(idle["id"])
    report = stack.json("instances", "reconcile")
    assert report["sessions"]["ended"] == [idle["id"]]
    assert stack.json("comfy", "status", idle["id"])["state"] == "idle"

    # busy the whole time, but only allowed 6 seconds
    timed = stack.json("comfy", "start", "--max-hours", str(6 / 3600))
    (tmp_path / "wf.json").write_text(json.dumps(flux_workflow(steps=100000)))
    proc = stack.popen("comfy", "run", str(tmp_path / "wf.json"), "--out", str(tmp_path / "out"))
    try:
        wait_for(lambda: not stack.live_instances(), what="the deadline to destroy the instance")
        assert proc.wait(timeout=120) != 0  # the run cannot finish: its machine is gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stack.json("instances", "reconcile")
    view = stack.json("comfy", "status", timed["id"])
    assert view["state"] == "timed_out" and "limit" in (view["error"] or "")


def test_a_controller_killed_mid_start_leaves_nothing_billing(stack):
    # the create's answer is slow; the controller dies before it records the instance
    stack.fake.fail_next(1, 200, path_contains="/asks/", act_first=True, delay_s=6)
    proc = stack.popen("comfy", "start", "--idle-minutes", "0.05")
    try:
        wait_for(lambda: stack.live_instances(), what="the instance to be created")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    store = StateStore(stack.home / "state.db")
    [row] = store.session_rows()
    assert row["state"] == "launching" and row["instance_id"] is None

    report = stack.json("instances", "reconcile", "--grace", "0")  # adopted into its session, not doubled
    [inst] = stack.live_instances()
    assert report["sessions"]["adopted"] == [str(inst.id)] and report["sessions"]["destroyed"] == []
    # nobody uses it: its idle minutes end it, and the next pass settles the record
    wait_for(lambda: not stack.live_instances(), what="the unused session to stop itself")
    report = stack.json("instances", "reconcile", "--grace", "0")
    assert report["sessions"]["ended"] == [row["id"]]
    assert stack.live_instances() == [] and stack.fake.state.created_count == 1
