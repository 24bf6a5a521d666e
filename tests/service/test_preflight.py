"""Checks before money (service/runs/preflight.py): what makes a dataset unfit to train, and that
every way to start a run (``train start``, the Launch node, the sidebar's quick launch) refuses
it with the reasons before anything is recorded or rented, on a GCS bucket (the emulator) with
the fake vast.ai server ready to rent."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from comfy_lora_cloud.errors import DatasetError
from comfy_lora_cloud.comfy.nodes.runs import launch_request, run_ref
from comfy_lora_cloud.comfy.routes.runs import train_request
from comfy_lora_cloud.service import graph
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.runs.preflight import check_dataset, require_ready
from comfy_lora_cloud.service.runs import TrainRequest
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage, open_storage
from comfy_lora_cloud.training.kohya_config import MODEL_FILES
from tests.comfy.conftest import SECRETS
from tests.comfy.vast_helpers import provider_factory_for
from tests.fakes.vast.server import FakeVast


def image(color, fmt="JPEG", size=(96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def dataset(storage, name, files: dict[str, bytes], manifest=None):
    for rel, body in files.items():
        storage.write_bytes(f"datasets/{name}/{rel}", body)
    storage.write_bytes(f"datasets/{name}/dataset.json", json.dumps(manifest or {}).encode())


def test_what_makes_a_dataset_unfit(tmp_path):
    s = LocalStorage(tmp_path / "bucket")
    dataset(s, "good", {f"{i}.jpg": image((i * 40, 0, 0)) for i in range(3)} | {f"{i}.txt": b"ohwx cat" for i in range(3)})
    ready = check_dataset(s, "good", lora_type="character", trigger="ohwx")
    assert ready.ok and ready.images == 3
    assert any("usually wants" in w for w in ready.warnings)  # 3 images for a character

    no_trigger = check_dataset(s, "good", lora_type="character", trigger=None)
    assert no_trigger.ok and any("without a trigger word" in w for w in no_trigger.warnings)
    assert not any("trigger" in w for w in check_dataset(s, "good", lora_type="style", trigger=None).warnings)

    dataset(s, "nocap", {"a.jpg": image((1, 2, 3)), "b.jpg": image((3, 2, 1)), "b.txt": b"   \n"})
    bad = check_dataset(s, "nocap", lora_type="style", trigger=None)
    assert not bad.ok and "2 image(s) without a caption or with an empty one" in bad.errors[0]

    good = image((9, 9, 9))
    dataset(s, "cut", {"a.jpg": good[: len(good) // 2], "a.txt": b"x", "b.jpg": good, "b.txt": b"x"})
    assert any(e.startswith("a.jpg: ") for e in check_dataset(s, "cut", lora_type="style", trigger=None).errors)

    dataset(s, "gifs", {"a.gif": image((5, 5, 5), "GIF"), "a.txt": b"x"})
    assert "none of the images is a type kohya trains on" in check_dataset(s, "gifs", lora_type="style",
                                                                            trigger=None).errors[0]
    dataset(s, "mixed", {"a.gif": image((5, 5, 5), "GIF"), "a.txt": b"x", "b.png": image((6, 6, 6), "PNG"),
                         "b.txt": b"x"})
    mixed = check_dataset(s, "mixed", lora_type="style", trigger=None)
    assert mixed.ok and any("kohya does not read are left out: a.gif" in w for w in mixed.warnings)

    with pytest.raises(DatasetError, match="cannot be trained, so nothing was rented: 2 image"):
        require_ready(s, "nocap", lora_type="style", trigger=None)
    # a manifest with nonsense in it is untrusted input, not a crash
    dataset(s, "odd", {"a.jpg": good, "a.txt": b"x"}, manifest={"settings": {"bucket": {"resolution": "huge"}}})
    assert check_dataset(s, "odd", lora_type="style", trigger=None).ok


@pytest.fixture
def world(gcs_bucket, clean_env, tmp_path):
    fake = FakeVast(SECRETS["vast_api_key"], created_s=0.1, loading_s=0.2, workdir=tmp_path / "instances")
    fake.start_in_thread()
    clean_env.mkdir(parents=True, exist_ok=True)
    (clean_env / "secrets.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in SECRETS.items()))
    (clean_env / "secrets.toml").chmod(0o600)
    settings = Settings.load(clean_env, storage=f"gs://{gcs_bucket}/lc", vast_url=fake.url, max_run_usd=50)
    storage = open_storage(settings=settings)
    for filename, _repo in MODEL_FILES.values():
        storage.write_bytes(f"models/{filename}", b"weights")
    dataset(storage, "nocap", {f"{i}.jpg": image((i * 50, 10, 10)) for i in range(4)}, {"trigger": "ohwx"})
    app = App(settings, storage=storage, providers={"vast": provider_factory_for(fake)})
    yield app, fake, storage
    fake.stop()


async def test_every_way_to_start_refuses_before_renting(world):
    app, fake, storage = world
    ref = graph.DatasetRef(name="nocap", storage_url=storage.url, images=4, captioned=0, trigger="ohwx")
    starts = {
        "train start": lambda: app.runs.start(TrainRequest(dataset="nocap", lora_type="style")),
        "quick launch": lambda: app.runs.start(train_request({"dataset": "nocap", "lora_type": "style"})),
        "Launch node": lambda: app.runs.start(launch_request(
            ref, lora_type="style", lora_name="", trigger="", gpu="auto", provider="vast", interruptible=False,
            max_usd=10.0, max_dph=2.0, max_hours=6.0)),
    }
    for how, start in starts.items():
        with pytest.raises(DatasetError) as exc:
            await start()
        assert "cannot be trained, so nothing was rented: 4 image(s) without a caption" in exc.value.message, how
    assert fake.state.instances == {}  # nothing rented
    assert app.state.list_runs() == []  # nothing recorded
    assert storage.list("runs/").objects == []  # nothing written for a run


async def test_the_launch_node_shows_the_dataset_checks_warnings(world):
    app, fake, storage = world
    dataset(storage, "cats", {f"{i}.jpg": image((i * 50, 90, 10)) for i in range(4)}
            | {f"{i}.txt": b"a cat on a sofa" for i in range(4)})
    ref = graph.DatasetRef(name="cats", storage_url=storage.url, images=4, captioned=4, trigger=None)
    req = launch_request(ref, lora_type="character", lora_name="", trigger="", gpu="auto", provider="vast",
                         interruptible=False, max_usd=10.0, max_dph=2.0, max_hours=6.0)
    run = run_ref(await app.runs.start(req), storage.url)  # as the Launch node does
    first, *warnings = run.summary.splitlines()
    assert first.startswith(f"run {run.run_id}: ") and len(fake.state.instances) == 1  # it did start
    assert any(w.startswith("warning: a character LoRA without a trigger word") for w in warnings), run.summary
    assert any(w.startswith("warning: ") and "usually wants" in w for w in warnings), run.summary
