"""The whole graph, as ComfyUI runs it node after node, without a ComfyUI server:

photos -> Crop for Training -> Caption (a tiny Florence-2 built here) -> Save Dataset (GCS
emulator) -> Launch (fake vast.ai; its instance runs the real trainer entrypoint as a local
process, kohya swapped for tests/fakes/fake_kohya.py) -> Await LoRA -> the LoRA file in the
loras folder with the bucket's checksum. Then the same graph is queued again: nothing new is
rented and the same file comes back.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from PIL import ImageOps

from comfy_lora_cloud.comfy.nodes import runs as node_runs
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.service import graph
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.money.costs import CostLedger
from comfy_lora_cloud.service.runs import TrainRequest
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.storage.base import checksum_file
from tests.dataset.tiny_models import build_florence
from tests.fakes.vast.server import FakeVast
from tests.training.trainer_helpers import FAKE_KOHYA, seed_bucket

REPO = Path(__file__).resolve().parents[2]
VAST_KEY = "vast-account-key-e2e-0123456789"
SA_JSON = '{"type": "service_account", "client_email": "trainer@p.iam.gserviceaccount.com"}'


@pytest.fixture
def world(gcs_bucket, gcs_env, monkeypatch, tmp_path):
    fake = FakeVast(VAST_KEY, created_s=0.1, loading_s=0.2, run_processes=True, workdir=tmp_path / "instances",
                    image_env={  # what the trainer image provides; here: this checkout and fake kohya
                        "LORA_CLOUD_KOHYA_LAUNCHER": f"{sys.executable} {FAKE_KOHYA}",
                        "STORAGE_EMULATOR_HOST": gcs_env.url, "PYTHONPATH": str(REPO),
                        "FAKE_KOHYA_STEP_SECONDS": "0.02"})
    url = fake.start_in_thread()
    storage_url = f"gs://{gcs_bucket}/lc"
    for k, v in {"LORA_CLOUD_STORAGE": storage_url, "LORA_CLOUD_VAST_URL": url, "LORA_CLOUD_VAST_API_KEY": VAST_KEY,
                 "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON, "LORA_CLOUD_MAX_RUN_USD": "50"}.items():
        monkeypatch.setenv(k, v)
    settings = Settings.load()
    storage = open_storage(settings=settings)
    seed_bucket(storage, dataset="unused", images=1, models=True)  # cached base weights in models/
    yield fake, settings, storage
    fake.stop()


def _photos(folder: Path, photos) -> Path:
    folder.mkdir()
    face = photos["astronaut"]
    for i, size in enumerate((1024, 900, 800)):
        img = face.resize((size, size))
        (ImageOps.mirror(img) if i % 2 else img).save(folder / f"astro_{i}.jpg", quality=92)
    (folder / "astro_0.txt").write_text("a woman in a space suit")  # an existing caption is kept
    return folder


async def _queue_graph(photos_dir, florence, app, storage, work, loras, progress):
    """The node chain, in the order ComfyUI executes it."""
    images = graph.load_images("folder", str(photos_dir), storage=storage, work=work)
    cropped = graph.crop_for_training(images, lora_type="character", resolution=512, trigger="ohwx", work=work,
                                      workers=1)
    captioned = graph.caption_images(cropped, model="florence", model_path=str(florence), trigger="ohwx",
                                     work=work)
    dataset = await graph.save_dataset(captioned, "astro", library=app.library)
    # the Launch node's request (node_runs.launch_request) with the test's small overrides
    req = TrainRequest(dataset=dataset.name, lora_type="character", gpu="4090", reuse_finished=True,
                       overrides={"subset.num_repeats": 1, "max_train_epochs": 2})
    run = node_runs.run_ref(await app.runs.start(req), storage.url)
    path = await app.runs.fetch_lora(run.run_id, run.lora_name, poll_s=0.2,
                                     on_status=node_runs.step_progress(lambda d, t: progress.append((d, t))))
    name = node_runs.comfy_lora_name(path)
    return images, cropped, captioned, dataset, run, name, path


@pytest.mark.slow
async def test_photos_to_lora_file_and_requeue_rents_nothing(world, tmp_path, tiny_photos):
    fake, settings, storage = world
    photos_dir = _photos(tmp_path / "photos", tiny_photos)
    florence = build_florence(tmp_path / "florence")
    state = StateStore(settings.state_db)
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    # built as inside ComfyUI (comfy/wiring.py): the nodes download where app.loras_dir says
    app = App(settings, storage=storage, state=state, python=sys.executable, loras_dir=loras / "lora_cloud")
    work = graph.WorkArea(settings.home / "work")
    progress: list[tuple[int, int]] = []

    images, cropped, captioned, dataset, run, name, path = await _queue_graph(
        photos_dir, florence, app, storage, work, loras, progress)

    assert images.count == 3 and cropped.prepared and cropped.count == 3
    caps = {p.name: p.with_suffix(".txt").read_text() for p in captioned.files()}
    assert len(caps) == 3 and all("ohwx" in c for c in caps.values())
    assert any("a woman in a space suit" in c for c in caps.values())  # kept, with the trigger placed
    assert dataset.images == 3 and dataset.captioned == 3 and not run.attached
    # the LoRA landed in models/loras/lora_cloud/ with the bucket's checksum
    assert name == "lora_cloud/astro.safetensors" and path == loras / "lora_cloud" / "astro.safetensors"
    assert checksum_file(path).md5 == storage.stat("loras/astro.safetensors").md5
    assert progress and progress[-1][0] == progress[-1][1] > 0
    # no instance left: the trainer destroys its own right after marking the run done
    for _ in range(300):
        if not fake.state.instances:
            break
        await asyncio.sleep(0.1)
    assert fake.state.created_count == 1 and not fake.state.instances
    record = state.get_run(run.run_id)
    assert record is not None and record.instance_id
    # costs: one guard pass (what ComfyUI's pack loop runs every 30 s) books the run's cost from
    # vast.ai's charges, and finds nothing to destroy
    async with app.provider("vast")() as provider:
        assert await provider.get(record.instance_id) is None
    report = await app.guard_pass()
    assert report.reconcile.destroyed == [] and report.reconcile.lost_runs == []
    assert state.get_run(run.run_id).state is RunState.DONE  # the bucket's word, not "lost"
    spent = CostLedger(state).run_usd(run.run_id)
    assert spent > 0
    # queue the same graph again: everything is reused, nothing is rented
    again = await _queue_graph(photos_dir, florence, app, storage, work, loras, [])
    assert again[4].attached and again[4].run_id == run.run_id
    assert again[1].folder == cropped.folder and again[2].folder == captioned.folder
    assert fake.state.created_count == 1
    assert again[6] == path and checksum_file(path).md5 == storage.stat("loras/astro.safetensors").md5
    assert read_state(storage, run.run_id) is RunState.DONE


def read_state(storage, run_id):
    from comfy_lora_cloud.training.status import read_status

    return read_status(storage, run_id).state


@pytest.fixture(scope="session")
def tiny_photos():
    from skimage import data
    from PIL import Image

    return {"astronaut": Image.fromarray(data.astronaut())}
