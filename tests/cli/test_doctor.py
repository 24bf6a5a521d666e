"""`lora-cloud doctor` through its entry point against the real parts: the fake vast.ai server,
the GCS emulator (the real google-cloud-storage client), a fake Hugging Face Hub (tests/fakes/hf.py)
and a ComfyUI-shaped folder. First every check passes; then each check fails once on purpose and
only that line (and the lines that depend on it) changes, with its exit code and a fix."""

from __future__ import annotations

import json

import asyncssh
import pytest

from comfy_lora_cloud.training.kohya_config import MODEL_FILES
from tests.fakes.hf import FakeHub
from tests.fakes.vast.server import FakeVast

VAST_KEY = "vast-doctor-key-0123456789abcdef"
HF_TOKEN = "hf_doctorTOKEN0123456789"
SA_JSON = json.dumps({"type": "service_account", "project_id": "p", "client_email": "trainer@p.iam.gserviceaccount.com",
                      "private_key": "-----BEGIN PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----\n",
                      "token_uri": "https://oauth2.googleapis.com/token"})
NAMES = ["settings", "storage", "gpu access", "vast.ai key", "credit", "ssh key", "base weights", "hf token",
         "flux licence", "comfyui"]


def _key(path) -> str:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="doctor@test")
    key.write_private_key(str(path))
    pub = key.export_public_key().decode().strip()
    path.with_name(path.name + ".pub").write_text(pub + "\n")
    return pub


@pytest.fixture
def world(tmp_path, gcs_bucket, gcs_env):
    fake = FakeVast(VAST_KEY, workdir=tmp_path / "instances")
    fake.start_in_thread()
    hub = FakeHub()
    hub.start()
    hub.user(HF_TOKEN)
    pub = _key(tmp_path / "id_ed25519")
    with fake.state.lock:
        fake.state.ssh_keys.append({"id": 1, "public_key": pub, "key": pub})
    comfy = tmp_path / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "main.py").write_text("# ComfyUI\n")
    bucket = gcs_env.client().bucket(gcs_bucket)
    for filename, _repo in MODEL_FILES.values():
        bucket.blob(f"lora/models/{filename}").upload_from_string(b"weights")
    env = {"LORA_CLOUD_STORAGE": f"gs://{gcs_bucket}/lora", "STORAGE_EMULATOR_HOST": gcs_env.url,
           "LORA_CLOUD_VAST_URL": fake.url, "LORA_CLOUD_VAST_API_KEY": VAST_KEY, "LORA_CLOUD_HF_TOKEN": HF_TOKEN,
           "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON, "LORA_CLOUD_SSH_KEY_PATH": str(tmp_path / "id_ed25519"),
           "HF_ENDPOINT": hub.url, "COMFYUI_PATH": str(comfy)}
    yield {"env": env, "fake": fake, "hub": hub, "bucket": bucket, "tmp": tmp_path}
    hub.stop()
    fake.stop()


def doctor(cli, env, code):
    proc = cli("doctor", "--json", check=code, **env)
    assert "Traceback" not in proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    return {c["name"]: c for c in data["checks"]}, data


def test_every_check_passes_on_a_working_setup(cli, world):
    checks, data = doctor(cli, world["env"], 0)
    assert list(checks) == NAMES
    assert {n: c["status"] for n, c in checks.items()} == dict.fromkeys(NAMES, "ok"), checks
    assert data["ok"] is True and data["summary"] == "all checks passed"
    assert "ssh key" in cli("doctor", **world["env"]).stdout  # the human table too
    # the storage probe wrote one object and deleted it again; the vast.ai account rented nothing
    assert [b.name for b in world["bucket"].client.list_blobs(world["bucket"].name, prefix="lora/")
            if "models/" not in b.name] == []
    assert world["fake"].state.instances == {}


def _no_comfyui(w):
    w["env"]["COMFYUI_PATH"] = ""


def _no_weights(w):
    for blob in w["bucket"].client.list_blobs(w["bucket"].name, prefix="lora/models/"):
        blob.delete()


def _broken_config(w):
    home = w["tmp"] / "lora-cloud-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("max_dph = [not toml\n")


def _local_folder(w):
    from comfy_lora_cloud.storage import LocalStorage

    folder = LocalStorage(w["tmp"] / "folder")
    for filename, _repo in MODEL_FILES.values():
        folder.write_bytes(f"models/{filename}", b"weights")
    w["env"]["LORA_CLOUD_STORAGE"] = str(w["tmp"] / "folder")


def _credit_zero(w):
    with w["fake"].state.lock:
        w["fake"].state.credit = 0.0


def _other_ssh_key(w):
    _key(w["tmp"] / "other_key")
    w["env"]["LORA_CLOUD_SSH_KEY_PATH"] = str(w["tmp"] / "other_key")


def _licence_not_accepted(w):
    w["hub"].user("hf_notacceptedTOKEN01234", accept=False)
    w["env"]["LORA_CLOUD_HF_TOKEN"] = "hf_notacceptedTOKEN01234"


CASES = [
    # (id, break the world, the check that fails, its status, exit code, a word of the message or fix)
    ("settings", _broken_config, "settings", "fail", 2, "config.toml"),
    ("storage", lambda w: w["env"].update(LORA_CLOUD_STORAGE="gs://no-such-bucket-doctor"), "storage", "fail", 3,
     "no-such-bucket-doctor"),
    ("gpu access: local folder", _local_folder, "gpu access", "warn", 0, "cannot reach"),
    ("gpu access: key stored as '{'", lambda w: w["env"].update(LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON="{"), "gpu access",
     "fail", 2, "not JSON"),
    ("vast.ai key", lambda w: w["env"].update(LORA_CLOUD_VAST_API_KEY="wrong-key-0123456789"), "vast.ai key", "fail",
     4, "manage-keys"),
    ("credit", _credit_zero, "credit", "fail", 4, "billing"),
    ("ssh key", _other_ssh_key, "ssh key", "fail", 5, "not registered"),
    ("base weights", _no_weights, "base weights", "warn", 0, "models cache"),
    ("hf token", lambda w: w["env"].update(LORA_CLOUD_HF_TOKEN="hf_revokedTOKEN012345"), "hf token", "fail", 2,
     "refuses the token"),
    ("flux licence", _licence_not_accepted, "flux licence", "fail", 7, "accept the licence"),
    ("comfyui", _no_comfyui, "comfyui", "warn", 0, "custom_nodes"),
]
DEPENDS = {"vast.ai key": {"credit", "ssh key"}, "hf token": {"flux licence"}, "storage": {"base weights"}}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_check_fails_once_on_purpose(cli, world, case):
    _id, breaker, name, status, code, words = case
    breaker(world)
    if name == "settings":
        proc = cli("doctor", "--json", check=code, **world["env"])
        data = json.loads(proc.stdout)
        # the problem and what is in force instead, then the other checks on those settings
        assert data["checks"][0]["name"] == "settings" and data["checks"][0]["status"] == "fail"
        assert [c["name"] for c in data["checks"]] == NAMES
        assert words in data["checks"][0]["detail"] and "in force" in data["checks"][0]["detail"]
        assert "Traceback" not in proc.stderr
        return
    checks, data = doctor(cli, world["env"], code)
    assert checks[name]["status"] == status, checks[name]
    assert words in checks[name]["detail"] + checks[name]["fix"]
    assert checks[name]["fix"], "every problem comes with its fix"
    for other, c in checks.items():
        if other == name:
            continue
        expected = "skip" if other in DEPENDS.get(name, ()) else "ok"
        assert c["status"] == expected, (other, c)
    assert data["ok"] is (code == 0)
