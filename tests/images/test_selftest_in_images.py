"""Opt-in (LORA_CLOUD_TEST_IMAGES=1): the built images start and pass their self-tests.

``scripts/build-images.sh`` builds the images and then runs this file; run alone, it tests the
images already built (LORA_CLOUD_TRAINER_IMAGE_REF, default the reference the code launches).
With Docker where there is one, else buildah (root). What each test proves:

- the trainer image's ENTRYPOINT, as its USER, with ``--self-test`` against a GCS bucket (the
  emulator, reached over the host network by the real google-cloud-storage client in the image):
  every import, sd-scripts' parser on every preset's generated config, one run end to end with
  the stand-in kohya; the bucket is left as it was;
- each image runs as uid 1000 and can write /workspace and the folders it must (the trainer its
  tokenizer cache; the inference image models/ and web/extensions/, which node packs write at
  import), nothing of the code;
- no build tool (compilers; git in the trainer), no pip cache, no wheel, no exported source folder
  and none of the machine's own CA certificates (passed to the local build as a secret) is in
  either image; ``pip check`` passes inside each;
- the inference image's ENTRYPOINT with ``--self-test`` (start.sh hands it to
  worker/inference_selftest.py): ComfyUI starts on CPU, every installed pack imports, our nodes are
  in /object_info, the templates are listed;
- the inference image's ENTRYPOINT as vast.ai starts it (root, a session's environment): it drops
  to its user, takes the weights from the bucket's cache, serves ComfyUI on 127.0.0.1, stops when
  idle, writes its final status and destroys its instance (the fake vast.ai server).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage
from tests.images.engine import Engine, pick_engine

pytestmark = pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_IMAGES") != "1",
                                reason="opt-in: LORA_CLOUD_TEST_IMAGES=1 (bash scripts/build-images.sh runs it)")

LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")  # Debian's home of a machine's own CAs
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine() -> Engine:
    name = pick_engine()
    if name is None:
        pytest.fail("no Docker engine and no buildah as root: cannot run the images")
    return Engine(name)


@pytest.fixture(scope="module")
def trainer(engine: Engine) -> str:
    ref = os.environ.get("LORA_CLOUD_TRAINER_IMAGE_REF") or Settings.model_fields["trainer_image"].default
    if not engine.exists(ref):
        pytest.fail(f"{ref} is not built: bash scripts/build-images.sh --only trainer")
    return ref


def test_trainer_self_test_passes_against_a_gcs_bucket(engine, trainer, gcs_bucket, gcs_env):
    bucket = open_storage(f"gs://{gcs_bucket}")
    bucket.write_bytes("datasets/mine/a.txt", b"the user's")

    proc = engine.run(trainer, ["--self-test", "--storage", f"gs://{gcs_bucket}"],
                      env={"STORAGE_EMULATOR_HOST": gcs_env.url})

    out = proc.stdout + proc.stderr
    print(out)  # the report, for the build log
    assert proc.returncode == 0, out
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("self-test ", "SELF-TEST"))]
    assert [line.split(":")[0] for line in lines] == [
        "self-test imports", "self-test kohya parser", "self-test end to end", "SELF-TEST PASSED"]
    assert all(": ok: " in line for line in lines[:3]), lines
    assert re.search(r"torchvision \d", lines[0]) and "stand-in" not in lines[0], lines[0]  # the real one
    assert re.search(r"kohya parser: ok: 9 configs pass", lines[1]), lines[1]
    assert f"against gs://{gcs_bucket}/lora-cloud-selftest-" in lines[2]
    assert [o.key for o in bucket.list("").objects] == ["datasets/mine/a.txt"]


# What each image may write, as its user: /workspace always; the trainer its tokenizer cache; the
# inference image the folders the node packs write at import (models/, web/extensions/). The code
# (ours, the venv, ComfyUI's) is read-only.
WRITABLE = {"trainer": ["/workspace", "/opt/tokenizers"],
            "inference": ["/workspace", "/opt/ComfyUI/models", "/opt/ComfyUI/web/extensions"]}
READ_ONLY = {"trainer": ["/opt/venv", "/opt/lora-cloud/comfy_lora_cloud"],
             "inference": ["/opt/venv", "/opt/ComfyUI/custom_nodes/comfy_lora_cloud/comfy_lora_cloud",
                           "/opt/ComfyUI/comfy"]}
# Build tools that must not be in an image. git is in the inference image on purpose:
# ComfyUI-Manager does not load without it (GitPython) and installs node packs with it.
BUILD_TOOLS = {"trainer": ["git", "gcc", "cc", "g++", "make"], "inference": ["gcc", "cc", "g++", "make"]}
HOMES = {"trainer": "/home/trainer", "inference": "/home/comfy"}
CODE_GIT = {"trainer": "/opt/sd-scripts/.git", "inference": "/opt/ComfyUI/.git"}


@pytest.fixture(params=["trainer", "inference"])
def image(request, engine: Engine) -> tuple[str, str]:
    """(kind, reference) for each image, so the checks below hold for both."""
    return request.param, request.getfixturevalue(request.param)


def test_runs_as_uid_1000_and_writes_only_its_folders(engine, image):
    kind, ref = image
    cfg = engine.config(ref)
    assert cfg.get("User") == "1000:1000" and cfg.get("WorkingDir") == "/workspace"
    script = "id -u; " + "".join(f"touch {d}/w && echo writable; " for d in WRITABLE[kind]) + "".join(
        f"touch {d}/x 2>/dev/null || echo read-only; " for d in READ_ONLY[kind])
    proc = engine.run(ref, [script], entrypoint=["sh", "-c"])
    expected = ["1000"] + ["writable"] * len(WRITABLE[kind]) + ["read-only"] * len(READ_ONLY[kind])
    assert proc.stdout.split() == expected, proc.stdout + proc.stderr


def test_has_no_build_tools_caches_or_local_substitutes(engine, image):
    kind, ref = image
    script = (f"for t in {' '.join(BUILD_TOOLS[kind])}; do command -v $t; done; "
              f"ls -d /root/.cache/pip {HOMES[kind]}/.cache/pip /tmp/sources /run/secrets {CODE_GIT[kind]} "
              "2>/dev/null; find / -xdev \\( -name '*.whl' -o -name .source-commit \\) -print 2>/dev/null; "
              "echo END")
    proc = engine.run(ref, [script], entrypoint=["sh", "-c"], user="root")
    assert proc.stdout.split() == ["END"], proc.stdout + proc.stderr


def test_no_certificate_of_this_machine_is_in_the_image(engine, image):
    """The local build gets the machine's CA bundle as a build secret; its own CAs (those Debian
    keeps in /usr/local/share/ca-certificates) must not be anywhere in the image."""
    needles = []
    for crt in sorted(LOCAL_CA_DIR.glob("*.crt")):
        body = [line for line in crt.read_text().splitlines() if line and not line.startswith("-----")]
        if len(body) > 4:
            needles.append(body[3])  # a line of the certificate's own bytes, unique to it
    if not needles:
        pytest.skip(f"this machine has no local CA certificates in {LOCAL_CA_DIR}")
    grep = ["grep", "-rlsF", *[f"-e{n}" for n in needles], "/", "--exclude-dir=proc", "--exclude-dir=sys",
            "--exclude-dir=dev"]
    proc = engine.run(image[1], grep, entrypoint=[], user="root")
    assert proc.returncode == 1 and proc.stdout == "", f"found in: {proc.stdout}{proc.stderr}"


def test_pip_check_passes(engine, image):
    proc = engine.run(image[1], ["-m", "pip", "check"], entrypoint=["python"])
    assert proc.returncode == 0 and "No broken requirements" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def inference(engine: Engine) -> str:
    ref = os.environ.get("LORA_CLOUD_INFERENCE_IMAGE_REF") or Settings.model_fields["trainer_image"].default.replace(
        "/trainer:", "/inference:")
    if not engine.exists(ref):
        pytest.fail(f"{ref} is not built: bash scripts/build-images.sh --only inference")
    return ref


def test_inference_self_test_passes(engine, inference):
    proc = engine.run(inference, ["--self-test"])
    out = proc.stdout + proc.stderr
    print(out)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("self-test ", "SELF-TEST"))]
    assert proc.returncode == 0, out
    assert [line.split(":")[0] for line in lines] == [
        "self-test comfyui", "self-test packs", "self-test nodes", "self-test templates", "SELF-TEST PASSED"]
    assert "comfy_lora_cloud" in lines[1]



def test_inference_session_starts_as_root_and_ends_itself_when_idle(engine, inference, gcs_bucket, gcs_env):
    """What vast.ai runs (start.sh as root, in the ssh runtype), end to end inside the image: drop
    to the image's user, take the fp8 weights from the bucket's models/ cache, start ComfyUI (on
    CPU here), report ready, stop when idle, write the final status and destroy its own instance
    with the container's key (the fake vast.ai server)."""
    import json
    import socket
    import urllib.request

    from comfy_lora_cloud.training.inference import model_files
    from tests.fakes.vast.server import FakeVast

    bucket = open_storage(f"gs://{gcs_bucket}")
    for name, _repo in model_files("fp8").values():  # ComfyUI reads them only when a prompt runs
        bucket.write_bytes(f"models/{name}", b"cached:" + name.encode())
    fake = FakeVast()
    fake.start_in_thread()
    try:
        req = urllib.request.Request(f"{fake.url}/_fake/instance", data=b'{"label": "lora-cloud:session:imgtest"}',
                                     headers={"Authorization": f"Bearer {fake.state.api_key}"}, method="POST")
        iid = json.loads(urllib.request.urlopen(req, timeout=10).read())["id"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {"STORAGE_EMULATOR_HOST": gcs_env.url, "LORA_CLOUD_STORAGE": f"gs://{gcs_bucket}",
               "LORA_CLOUD_SESSION_ID": "imgtest", "LORA_CLOUD_IDLE_MINUTES": "0.25", "LORA_CLOUD_MAX_HOURS": "1",
               "LORA_CLOUD_COMFY_PORT": str(port), "LORA_CLOUD_COMFY_COMMAND": "python /opt/ComfyUI/main.py --cpu",
               "CONTAINER_ID": str(iid), "CONTAINER_API_KEY": fake.state.instances[iid].api_key,
               "LORA_CLOUD_VAST_URL": fake.url}
        proc = engine.run(inference, [], env=env, user="root", timeout=600)
        out = proc.stdout + proc.stderr
        print(out)
        assert proc.returncode == 0, out
        status = json.loads(bucket.read_bytes("sessions/imgtest/status.json"))
        assert status["state"] == "idle" and "idle for" in status["message"], status
        assert "--listen 127.0.0.1" in out  # reached through the SSH tunnel only
        assert iid in fake.state.destroyed and iid not in fake.state.instances
    finally:
        fake.stop()
