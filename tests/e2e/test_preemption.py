"""Interruptible runs that finish: the fake vast.ai server outbids the instance under the real
trainer entrypoint (kohya swapped for tests/fakes/fake_kohya.py) and the guard pass, as ComfyUI's
loop runs it, recovers the run.

* preempted twice (once stopped with SIGTERM and a grace period, once killed outright, neither
  instance coming back): the run moves to a new GPU each time, keeps its id and label, and
  finishes with the planned steps and a LoRA whose checksum matches; each preemption lost less
  than one checkpoint interval; no instance is left billing; every attempt's cost is booked to
  the run, and ``train status`` shows the attempts;
* outbid, then the bid goes away: the same instance resumes on its own disk and finishes.

kohya pauses at chosen overall steps (FAKE_KOHYA_PAUSE_AT, mid-epoch) so that "preempted at step
N" is exact, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.money.costs import CostLedger
from comfy_lora_cloud.service.events import PREEMPTION_EVENT
from comfy_lora_cloud.service.runs import TrainRequest, fetch_lora
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.storage.base import checksum_file
from comfy_lora_cloud.training.status import read_events, read_status
from tests.fakes.vast.server import FakeVast
from tests.training.trainer_helpers import FAKE_KOHYA, seed_bucket

REPO = Path(__file__).resolve().parents[2]
VAST_KEY = "vast-account-key-preempt-0123456789"
SA_JSON = '{"type": "service_account", "client_email": "trainer@p.iam.gserviceaccount.com"}'
STEPS_PER_EPOCH, EPOCHS = 6, 6  # 3 images x 2 repeats, batch 1
PAUSES = (15, 27)  # mid epoch 3 and mid epoch 5


@pytest.fixture
def world(gcs_bucket, gcs_env, monkeypatch, tmp_path):
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    fake = FakeVast(VAST_KEY, created_s=0.1, loading_s=0.2, run_processes=True, workdir=tmp_path / "instances",
                    image_env={  # what the trainer image provides; here: this checkout and fake kohya
                        "LORA_CLOUD_KOHYA_LAUNCHER": f"{sys.executable} {FAKE_KOHYA}",
                        "STORAGE_EMULATOR_HOST": gcs_env.url, "PYTHONPATH": str(REPO),
                        "FAKE_KOHYA_STEP_SECONDS": "0.02", "FAKE_KOHYA_STEP_FILE": "kohya-step",
                        "FAKE_KOHYA_PAUSE_AT": ",".join(map(str, PAUSES)), "FAKE_KOHYA_PAUSE_DIR": str(pauses)})
    url = fake.start_in_thread()
    for k, v in {"LORA_CLOUD_STORAGE": f"gs://{gcs_bucket}/lc", "LORA_CLOUD_VAST_URL": url,
                 "LORA_CLOUD_VAST_API_KEY": VAST_KEY, "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON,
                 "LORA_CLOUD_MAX_RUN_USD": "50"}.items():
        monkeypatch.setenv(k, v)
    settings = Settings.load()
    storage = open_storage(settings=settings)
    seed_bucket(storage, images=3)  # the dataset and the cached base weights
    emitted: list[tuple[str, dict]] = []
    app = App(settings, storage=storage, state=StateStore(settings.state_db), python=sys.executable,
              emit=lambda name, data: emitted.append((name, data)))
    yield fake, app, storage, pauses, emitted
    fake.stop()


async def _until(condition, what: str, timeout: float = 90.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await asyncio.to_thread(condition):
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _state(storage, run_id) -> RunState | None:
    status = read_status(storage, run_id)
    return status.state if status else None


def _checkpoint_step(storage, run_id) -> int:
    try:
        return json.loads(storage.read_bytes(f"runs/{run_id}/checkpoints/latest.json"))["step"]
    except Exception:  # noqa: BLE001 - not there yet
        return 0


async def _start(app, **policy) -> tuple[str, int]:
    req = TrainRequest(dataset="cat", gpu="4090", interruptible=True,
                       overrides={"subset.num_repeats": 2, "max_train_epochs": EPOCHS}, **policy)
    result = await app.runs.start(req)
    return result.run_id, int(result.instance_id)


@pytest.mark.slow
async def test_preempted_twice_moves_twice_and_finishes(world):
    fake, app, storage, pauses, emitted = world
    run_id, first = await _start(app, resume_wait_minutes=0)

    # 1: outbid at step 15 (kohya sits there); the container gets SIGTERM and 30 s before SIGKILL
    fake.state.outbid(first, None, grace_s=30, at_step=PAUSES[0])
    await _until(lambda: _state(storage, run_id) is RunState.PREEMPTED, "the trainer to report the preemption")
    report = await app.guard_pass()
    assert report.recovery.preempted == [run_id], report
    second = int(report.recovery.relaunched[run_id])
    assert fake.state.get(first) is None

    # 2: outbid at step 27 once the epoch-4 checkpoint is in the bucket; killed with no warning
    await _until(lambda: (pauses / f"paused-{PAUSES[1]}").exists() and _checkpoint_step(storage, run_id) >= 24,
                 "kohya to reach the second preemption")
    fake.state.outbid(second, None)
    report = await app.guard_pass()
    assert report.recovery.preempted == [run_id], report
    third = int(report.recovery.relaunched[run_id])

    await _until(lambda: _state(storage, run_id) is RunState.DONE, "the run to finish")
    await _until(lambda: not fake.state.instances, "the trainer to destroy its instance")
    report = await app.guard_pass()  # books the charges; nothing to destroy, nothing lost
    assert report.reconcile.destroyed == [] and report.reconcile.lost_runs == []
    assert app.state.get_run(run_id).state is RunState.DONE

    # the planned training, all of it, and a LoRA whose checksums agree everywhere
    status = read_status(storage, run_id)
    assert status.step == status.total_steps == STEPS_PER_EPOCH * EPOCHS
    meta = json.loads(storage.read_bytes("loras/cat.json"))
    assert meta["run_id"] == run_id and storage.stat("loras/cat.safetensors").md5 == meta["md5"]
    path = await asyncio.to_thread(fetch_lora, storage, status, app.loras_dir, "cat")  # what Await LoRA downloads
    assert checksum_file(path).md5 == meta["md5"]

    # each preemption lost less than one checkpoint interval: resumed from the epoch before it
    events = read_events(storage, run_id)
    resumed = [e["step"] for e in events if e["kind"] == "resumed"]
    assert resumed == [12, 24]
    assert all(0 <= pause - step < STEPS_PER_EPOCH for pause, step in zip(PAUSES, resumed))
    # every epoch was trained (a SIGKILL may take the newest epoch's event with it), the last two last
    epochs = [e["epoch"] for e in events if e["kind"] == "epoch"]
    assert set(epochs) == set(range(1, EPOCHS + 1)) and epochs[-2:] == [5, 6]

    # one run, one label, three instances, none left; each attempt booked to the run
    assert fake.state.created_count == 3 and sorted(fake.state.destroyed) == sorted([first, second, third])
    assert {fake.state.destroyed[i].label for i in (first, second, third)} == {f"lora-cloud:{run_id}"}
    booked = {c.instance_id for c in app.state.costs(run_id=run_id)}
    assert booked == {str(first), str(second), str(third)}
    history = await app.recovery.history(run_id)
    assert [(a.instance_id, a.end, a.step_start) for a in history.attempts] == [
        (str(first), "preempted", 0), (str(second), "preempted", 12), (str(third), "done", 24)]
    assert history.attempts[0].step_end == PAUSES[0]  # the trainer said where SIGTERM found it
    assert history.preemptions == 2 and history.lost_s > 0
    assert history.total_usd == pytest.approx(CostLedger(app.state).run_usd(run_id), abs=1e-3)
    assert [d["kind"] for n, d in emitted if n == PREEMPTION_EVENT] == ["preempted", "relaunched"] * 2

    from comfy_lora_cloud.cli.main import app as cli

    shown = await asyncio.to_thread(CliRunner().invoke, cli, ["train", "status", run_id], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert f"attempt 3: instance {third} RTX 4090" in shown.output and "2 preemption(s)" in shown.output


@pytest.mark.slow
async def test_outbid_instance_comes_back_and_finishes_in_place(world):
    fake, app, storage, pauses, emitted = world
    (pauses / f"paused-{PAUSES[1]}").write_text("")  # one preemption here: kohya does not stop at the second
    run_id, first = await _start(app)  # the settings' wait: 10 minutes
    fake.state.outbid(first, None, grace_s=30, at_step=PAUSES[0])
    await _until(lambda: _state(storage, run_id) is RunState.PREEMPTED, "the trainer to report the preemption")
    report = await app.guard_pass()
    assert report.recovery.preempted == report.recovery.waiting == [run_id]
    kept = next((fake.state.get(first).workdir / "output").glob("cat-000002-state")) / "optimizer.bin"
    before = kept.stat().st_mtime_ns

    fake.state.regain(first)  # the higher bid went away
    await _until(lambda: _state(storage, run_id) in (RunState.STARTING, RunState.TRAINING, RunState.UPLOADING,
                                                      RunState.DONE), "the trainer to start again")
    report = await app.guard_pass()
    assert report.recovery.resumed == [run_id] or _state(storage, run_id) is RunState.DONE

    await _until(lambda: _state(storage, run_id) is RunState.DONE, "the run to finish")
    await _until(lambda: not fake.state.instances, "the trainer to destroy its instance")
    assert fake.state.created_count == 1  # never moved
    assert kept.stat().st_mtime_ns == before  # resumed from its own disk
    status = read_status(storage, run_id)
    assert status.step == status.total_steps == STEPS_PER_EPOCH * EPOCHS
    history = await app.recovery.history(run_id)
    assert [(a.instance_id, a.end) for a in history.attempts] == [(str(first), "done")]
    assert history.preemptions == 1 and history.attempts[0].preemptions == 1
