"""`lora-cloud models cache` through its entry point on the embedded default (a local bucket):
files from a folder the user already has, the rest from a fake Hugging Face Hub, once."""

from __future__ import annotations

from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.training.kohya_config import MODEL_FILES
from tests.fakes.hf import FakeHub

TOKEN = "hf_cacheTOKEN0123456789"


def test_models_cache_from_a_folder_then_the_hub_once(cli, clean_env, tmp_path):
    hub = FakeHub()
    hub.start()
    try:
        hub.user(TOKEN)
        have = tmp_path / "ComfyUI" / "models" / "clip"
        have.mkdir(parents=True)
        (have / "clip_l.safetensors").write_bytes(b"my own clip_l")
        env = {"HF_ENDPOINT": hub.url, "LORA_CLOUD_HF_TOKEN": TOKEN}
        status = cli.json("models", "status", **env)
        assert status["complete"] is False and not any(f["cached"] for f in status["files"])

        out = cli.json("models", "cache", "--from", str(tmp_path / "ComfyUI"), "--work-dir", str(tmp_path / "w"), **env)
        bucket = LocalStorage(clean_env / "bucket")
        assert out["complete"] is True and out["cached_from"]["clip_l.safetensors"].endswith("clip_l.safetensors")
        assert bucket.read_bytes("models/clip_l.safetensors") == b"my own clip_l"
        assert bucket.read_bytes("models/flux1-dev.safetensors") == \
            hub.file_bytes("black-forest-labs/FLUX.1-dev", "flux1-dev.safetensors")
        assert sorted(hub.downloads) == sorted(f"{repo}/{f}" for f, repo in MODEL_FILES.values()
                                               if f != "clip_l.safetensors")
        assert list((tmp_path / "w").iterdir()) == []  # each download removed after its upload
        again = cli.json("models", "cache", **env)  # once: nothing is downloaded again
        assert set(again["cached_from"].values()) == {"cached"} and len(hub.downloads) == 3
    finally:
        hub.stop()


def test_models_cache_without_the_licence_says_how_to_accept_it(cli, clean_env):
    hub = FakeHub()
    hub.start()
    try:
        hub.user(TOKEN, accept=False)
        proc = cli("models", "cache", check=7, HF_ENDPOINT=hub.url, LORA_CLOUD_HF_TOKEN=TOKEN)
        assert "accept the licence" in proc.stderr and "Traceback" not in proc.stderr
        assert not (clean_env / "bucket" / "models").exists() or not any((clean_env / "bucket" / "models").iterdir())
        proc = cli("models", "cache", check=7)  # no token, no --from: say what would work
        assert "--from DIR" in proc.stderr
        proc = cli("models", "cache", "--from", str(clean_env / "nope"), check=2)
        assert "not a folder" in proc.stderr
    finally:
        hub.stop()
