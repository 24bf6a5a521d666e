"""LocalProvider runs the container command as a process group and kills it on destroy."""

from __future__ import annotations

import asyncio

from comfy_lora_cloud.models import InstanceState
from comfy_lora_cloud.providers.base import Capability, LaunchSpec, OfferRequest, Provider, run_label
from comfy_lora_cloud.providers.local import LocalProvider


async def test_local_launch_logs_destroy(tmp_path):
    p = LocalProvider(tmp_path / "local", vram_gb=24)
    assert isinstance(p, Provider) and Capability.STOP not in p.capabilities
    assert await p.search(OfferRequest(min_vram_gb=40)) == []
    (offer,) = await p.search(OfferRequest(min_vram_gb=23))
    inst = await p.launch(offer, LaunchSpec(image="ignored", label=run_label("loc"), env={"X": "42"},
                                            onstart='echo "x=$X id=$CONTAINER_ID key=${CONTAINER_API_KEY:-none}"; sleep 60'))
    assert inst.run_id == "loc" and inst.state is InstanceState.RUNNING
    for _ in range(100):
        if "x=42" in await p.logs(inst.id):
            break
        await asyncio.sleep(0.05)
    assert f"x=42 id={inst.id} key=none" in await p.logs(inst.id)
    assert [i.id for i in await p.list()] == [inst.id]
    # a new provider object (a restarted controller) still finds and kills it
    again = LocalProvider(tmp_path / "local")
    assert await again.destroy(inst.id) is True
    assert await again.get(inst.id) is None and await again.list() == []


async def test_local_exit_is_reported(tmp_path):
    p = LocalProvider(tmp_path / "local")
    (offer,) = await p.search(OfferRequest())
    inst = await p.launch(offer, LaunchSpec(image="i", label=run_label("quick"), onstart="exit 3"))
    for _ in range(100):
        if (await p.get(inst.id)).state is InstanceState.EXITED:
            break
        await asyncio.sleep(0.05)
    assert (await p.get(inst.id)).state is InstanceState.EXITED
    assert await p.destroy(inst.id) is True
