"""What made a LoRA travels with it: the trainer writes the same fields into the bucket's
loras/<name>.json and into the .safetensors header (kohya's ss_* keys kept), so a downloaded file
still says which run, dataset, trigger, settings, loss and cost made it."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.storage.base import checksum_file
from comfy_lora_cloud.training.status import StatusReporter
from comfy_lora_cloud.training.lora_meta import (
    PREFIX, LoraInfo, from_header, header_metadata, read_safetensors_metadata, stamp_safetensors,
)
from tests.fakes.fake_kohya import lora_tensors, write_safetensors
from tests.training.trainer_helpers import TrainerProcess, read_json, seed_bucket, small_spec

# what a LoRA's header says about its making: the sidecar has these and the file-only facts
FILE_FACTS = {"name", "size", "md5", "crc32c", "sample_images", "vram_gb"}


def _tensor_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return data[8 + n:]


def test_stamping_keeps_kohyas_keys_and_the_tensors(tmp_path):
    path = tmp_path / "x.safetensors"
    write_safetensors(path, lora_tensors(4, 4.0), {"ss_network_dim": "4", "modelspec.trigger_phrase": "ohwx"})
    before = _tensor_bytes(path)
    info = LoraInfo(run_id="r1", preset="character", lora_type="character", dataset="cats", trigger="ohwx cat",
                    overrides={"max_train_epochs": 4}, images=3, steps=24, rank=4, alpha=4.0, final_loss=0.12,
                    cost_usd=0.0421, created_at=1.5e9, date="2017-07-14T02:40:00Z")
    stamp_safetensors(path, header_metadata(info))
    meta = read_safetensors_metadata(path)
    assert meta["ss_network_dim"] == "4" and meta["modelspec.trigger_phrase"] == "ohwx"
    assert meta[PREFIX + "trigger"] == "ohwx cat" and meta[PREFIX + "rank"] == "4"
    assert from_header(meta) == {k: v for k, v in info.to_dict().items() if v is not None}
    assert _tensor_bytes(path) == before
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0  # data stays 8-byte aligned
    # the header is untrusted: junk under our prefix is skipped, not trusted
    assert from_header({PREFIX + "steps": "{not json", PREFIX + "evil": "x", PREFIX + "trigger": "t"}) == {"trigger": "t"}


async def test_trained_lora_round_trip_through_the_bucket(tmp_path, gcs_bucket, vast):
    """fake kohya -> the real trainer entrypoint (a process) -> GCS (emulator) -> lora download ->
    the header read back equals the bucket's JSON."""
    _fake_vast, vast_url = vast
    url = f"gs://{gcs_bucket}/lora"
    storage = open_storage(url)
    seed_bucket(storage)
    small_spec().save(storage)
    # the controller announced the rented GPU half an hour ago (service/runs/recovery.py: announce_attempt)
    announced = StatusReporter(storage, "run1", clock=lambda: time.time() - 1800)
    announced.event("attempt", n=1, gpu="RTX 4090", dph=0.4, interruptible=False, offer_id="o-1")
    announced.update(state=RunState.LAUNCHING, message="renting RTX 4090")
    announced.flush()
    trainer = TrainerProcess(storage_url=url, workdir=tmp_path / "work", vast_url=vast_url,
                             env={"STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"]})
    rc, out = await trainer.run("run1")
    assert rc == 0, out

    sidecar = read_json(storage, "loras/cat.json")
    app = App(Settings(home=tmp_path / "home", storage=url), storage=storage, loras_dir=tmp_path / "loras")
    got = await app.library.download_lora("cat")
    path = Path(got.path)
    assert checksum_file(path).md5 == sidecar["md5"] == storage.stat("loras/cat.safetensors").md5

    header = read_safetensors_metadata(path)
    ours = from_header(header)
    assert ours == {k: v for k, v in sidecar.items() if k not in FILE_FACTS and v is not None}
    assert (ours["run_id"], ours["dataset"], ours["images"], ours["trigger"], ours["preset"]) == (
        "run1", "cat", 3, "ohwx cat", "character")
    assert ours["overrides"] == {"subset.num_repeats": 2, "max_train_epochs": 4}
    assert (ours["steps"], ours["epochs"], ours["rank"], ours["base_model"]) == (24, 4, 16, "flux1-dev")
    assert ours["alpha"] == 16.0 and ours["learning_rate"] == 2e-4 and ours["resolution"] == 1024
    assert 0 < ours["final_loss"] < 0.4  # fake kohya's last avr_loss
    assert (ours["gpu"], ours["dph"]) == ("RTX 4090", 0.4)
    assert 0.2 <= ours["cost_usd"] < 0.25  # $0.40/hr for the half hour since the attempt began, and the run
    assert ours["date"].endswith("Z") and ours["created_at"] > 1.7e9
    # kohya's own keys are still there
    assert header["ss_network_dim"] == "16" and header["ss_output_name"] == "cat"
    assert header["modelspec.architecture"] == "flux-1-dev/lora"

    # the library shows the same from the bucket and from the downloaded file
    remote = await app.library.lora_metadata("cat")
    local = await app.library.lora_file_metadata(path)
    assert remote.lora_cloud == local.lora_cloud == ours
    assert remote.info["md5"] == sidecar["md5"]
    assert json.loads(header[PREFIX + "overrides"]) == sidecar["overrides"]


def test_a_moved_run_costs_each_attempts_price_for_its_time():
    """A run preempted and moved: each attempt's $/hr counts from its announcement to the next."""
    from comfy_lora_cloud.worker.publish import attempt_costs

    events = [
        {"t": 0.0, "kind": "attempt", "n": 1, "gpu": "RTX 4090", "dph": 0.4},
        {"t": 100.0, "kind": "state", "state": "training"},
        {"t": 3600.0, "kind": "attempt", "n": 2, "gpu": "A100 PCIE", "dph": 1.2},
        {"t": 7200.0, "kind": "attempt", "n": "junk", "dph": "free"},  # untrusted: skipped
    ]
    assert attempt_costs(events, 10_800.0) == ("A100 PCIE", 1.2, round(0.4 + 1.2 * 2, 4))
    assert attempt_costs([], 10_800.0) == (None, None, None)
