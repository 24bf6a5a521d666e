"""A controller process for the crash tests: launches one run, SIGKILLing itself at a chosen step.

    python -m tests.service.controller launch URL KEY DB RUN_ID CRASH_AT
    python -m tests.service.controller reconcile URL KEY DB

CRASH_AT: before_create | after_create | loading | running | none. The key comes in argv only
because this is a test helper talking to a fake.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from comfy_lora_cloud.models import InstanceState, Run
from comfy_lora_cloud.providers.base import LaunchSpec
from comfy_lora_cloud.providers.vast import VastClient, VastProvider, offer_from_vast
from comfy_lora_cloud.service.runs.launch import launch_run
from comfy_lora_cloud.service.guard.reconcile import Reconciler
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage.local import LocalStorage


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def launch(url: str, key: str, db: str, run_id: str, crash_at: str) -> None:
    async with VastClient(url, key, backoff_base=0.05) as client:
        provider = VastProvider(client)
        state = StateStore(db)
        rows = await client.search_offers({"num_gpus": {"eq": 1}, "rentable": {"eq": True},
                                           "order": [["dph_total", "asc"]], "limit": 1})
        offer = offer_from_vast(rows[0])
        crash_step = {"before_create": "intent_recorded", "after_create": "created"}.get(crash_at)

        def on_step(name: str) -> None:
            print(f"STEP {name}", flush=True)
            if name == crash_step:
                _die()

        inst = await launch_run(provider, state, Run(id=run_id, dataset="d", preset="character", lora_name="l"),
                                offer, LaunchSpec(image="img", label="", disk_gb=20), on_step=on_step)
        want = {"loading": InstanceState.LOADING, "running": InstanceState.RUNNING}.get(crash_at)
        while want is not None:
            got = await provider.get(str(inst.id))
            if got is not None and got.state is want:
                print(f"STEP {want.value}", flush=True)
                _die()
            await asyncio.sleep(0.05)


async def reconcile(url: str, key: str, db: str) -> None:
    async with VastClient(url, key, backoff_base=0.05) as client:
        bucket = LocalStorage(os.path.join(os.path.dirname(db), "bucket"))
        report = await Reconciler(VastProvider(client), StateStore(db), bucket, grace_s=0).run_once()
        print(json.dumps(report.to_dict()), flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    asyncio.run(launch(*args) if mode == "launch" else reconcile(*args))
