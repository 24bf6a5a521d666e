"""The library's and the templates' records: ``to_dict()`` is the JSON the sidebar reads, so
it keeps each answer's keys, their order and its nulls, including the keys an answer has only in
one of its forms (a refused staged file, a LoRA file on this machine, a cache run)."""

from __future__ import annotations

import asyncio
import os

from PIL import Image

from comfy_lora_cloud.models import Lora, Problem
from comfy_lora_cloud.remote.comfyui_answers import OutputImage
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.library import LibraryLora, LoraMetadata, ModelsStatus, StagedPut, WeightFile
from comfy_lora_cloud.service.templates import LoraTestStatus
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage


def test_a_staged_file_says_why_it_was_refused_or_what_was_kept():
    assert StagedPut(file="a.txt", ok=False, reason="the file is empty").to_dict() == {
        "file": "a.txt", "ok": False, "reason": "the file is empty"}
    caption = StagedPut(file="a.txt", ok=True, size=3, sha256="ab").to_dict()
    assert list(caption) == ["file", "ok", "size", "sha256"]  # no pixels for a caption
    image = StagedPut(file="a.png", ok=True, size=3, sha256="ab", width=8, height=0).to_dict()
    assert list(image) == ["file", "ok", "size", "sha256", "width", "height"] and image["height"] == 0


def test_lora_metadata_from_the_bucket_and_from_a_file_keep_their_own_keys():
    common = {"metadata": {"ss_steps": "10"}, "lora_cloud": {"run_id": "r1"}}
    bucket = LoraMetadata(name="cat", size=5, md5=None, tensors=2, info={"md5": "x"},
                          problems=(Problem("loras/cat.json", "bad"),), **common).to_dict()
    assert bucket == {"name": "cat", "size": 5, "md5": None, "metadata": {"ss_steps": "10"}, "tensors": 2,
                      "lora_cloud": {"run_id": "r1"}, "info": {"md5": "x"},
                      "problems": [{"entry": "loras/cat.json", "message": "bad"}]}
    local = LoraMetadata(name="cat", size=5, path="/x/cat.safetensors", **common).to_dict()
    assert local == {"name": "cat", "path": "/x/cat.safetensors", "size": 5, "metadata": {"ss_steps": "10"},
                     "lora_cloud": {"run_id": "r1"}, "info": {}, "problems": []}


def test_a_listed_lora_is_the_lora_with_local_added_last():
    lora = Lora(name="cat", size=4, md5="m", metadata={"trigger": "ohwx"})
    assert LibraryLora(lora, True).to_dict() == {**lora.to_dict(), "local": True}
    assert list(LibraryLora(lora, False).to_dict())[-1] == "local"


def test_models_status_has_cached_from_only_after_a_cache():
    files = (WeightFile(file="ae.safetensors", repo="r", cached=True, key="models/ae.safetensors"),)
    status = ModelsStatus(storage="file:///b", files=files, complete=True)
    assert "cached_from" not in status.to_dict()
    cached = ModelsStatus(storage="file:///b", files=files, complete=True, cached_from={"ae.safetensors": "cached"})
    assert cached.to_dict()["cached_from"] == {"ae.safetensors": "cached"}
    assert cached.to_dict()["files"] == [{"file": "ae.safetensors", "repo": "r", "cached": True,
                                          "key": "models/ae.safetensors"}]


def test_a_test_status_is_finished_once_done_failed_or_unknown():
    image = OutputImage(filename="a.png", subfolder="lora_cloud", node="9", data=b"not sent")
    status = LoraTestStatus(prompt_id="p", state="running", error=None, images=(image,), lora="cat",
                            template="basic_txt2img")
    assert not status.finished
    assert status.to_dict() == {"prompt_id": "p", "state": "running", "error": None,
                                "images": [{"filename": "a.png", "subfolder": "lora_cloud", "type": "output",
                                            "node": "9"}], "lora": "cat", "template": "basic_txt2img"}
    assert all(LoraTestStatus("p", s, None, (), "cat", "t").finished for s in ("done", "failed", "unknown"))


def test_a_dataset_round_trip_answers_with_records_whose_json_is_the_old_answer(clean_env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        Image.frombytes("RGB", (8, 8), os.urandom(8 * 8 * 3)).save(src / f"{i}.png", "PNG")
    (src / "0.txt").write_text("a cat")
    app = App(Settings.load(clean_env), storage=LocalStorage(tmp_path / "bucket"))

    async def go():
        up = await app.library.upload_dataset(src, "cat")
        assert (up.result, up.files, up.deleted, up.bad) == ("created", 3, 0, ())
        assert list(up.to_dict()) == ["dataset", "result", "resumed", "files", "bytes", "skipped", "deleted",
                                      "seconds", "url", "bad"] and up.to_dict()["bad"] == []
        listing = await app.library.dataset_listing(0, 10)
        [d] = listing.datasets
        assert (d.name, d.images, d.captioned) == ("cat", 2, 1)
        assert listing.to_dict() == {"datasets": [d.to_dict()], "problems": [], "total": 1, "offset": 0, "limit": 10}
        images = await app.library.dataset_images("cat")
        assert [(i.file, i.caption) for i in images] == [("0.png", "a cat"), ("1.png", None)]
        assert await app.library.dataset_captions("cat") == {"0.png": "a cat", "1.png": None}
        down = await app.library.download_dataset("cat", tmp_path / "down")
        assert down.files == 4 and down.to_dict()["path"] == str(tmp_path / "down")  # and the manifest
        gone = await app.library.delete_dataset("cat")
        assert gone.to_dict() == {"dataset": "cat", "deleted": gone.deleted} and gone.deleted >= 3

    asyncio.run(go())
