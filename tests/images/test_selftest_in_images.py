"""Opt-in (LORA_CLOUD_TEST_IMAGES=1): the built images start and pass their self-tests.

``scripts/build-images.sh`` builds the images and then runs this file; run alone, it tests the
images already built (LORA_CLOUD_TRAINER_IMAGE_REF, default the reference the code launches).
With Docker where there is one, else buildah (root). What each test proves:

- the trainer image's ENTRYPOINT, as its USER, with ``--self-test`` against a GCS bucket (the
  emulator, reached over the host network by the real google-cloud-storage client in the image):
  every import, sd-scripts' parser on every preset's generated config, one run end to end with
  the stand-in kohya; the bucket is left as it was;
- it runs as uid 1000 and can write /workspace and the tokenizer cache, nothing else of the image;
- no build tool (git, compilers), no pip cache, no wheel, no exported source folder and none of
  the machine's own CA certificates (passed to the local build as a secret) is in the image;
- ``pip check`` passes inside it;
- the inference image's ENTRYPOINT with ``--self-test`` (start.sh hands it to
  worker/inference_selftest.py): ComfyUI starts on CPU, every installed pack imports, our nodes are
  in /object_info, the templates are listed. Skipped while inference_image/ has no Dockerfile.
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
    assert re.search(r"kohya parser: ok: 9 configs pass", lines[1]), lines[1]
    assert f"against gs://{gcs_bucket}/lora-cloud-selftest-" in lines[2]
    assert [o.key for o in bucket.list("").objects] == ["datasets/mine/a.txt"]


def test_trainer_runs_as_uid_1000_and_writes_only_its_folders(engine, trainer):
    cfg = engine.config(trainer)
    assert cfg.get("User") == "1000:1000" and cfg.get("WorkingDir") == "/workspace"
    script = ("id -u; touch /workspace/w /opt/tokenizers/w && echo writable; "
              "touch /opt/venv/x 2>/dev/null || echo venv-read-only; "
              "touch /opt/lora-cloud/comfy_lora_cloud/x 2>/dev/null || echo code-read-only")
    proc = engine.run(trainer, [script], entrypoint=["sh", "-c"])
    assert proc.stdout.split() == ["1000", "writable", "venv-read-only", "code-read-only"], proc.stdout + proc.stderr


def test_trainer_has_no_build_tools_caches_or_local_substitutes(engine, trainer):
    script = ("for t in git gcc cc g++ make; do command -v $t; done; "
              "ls -d /root/.cache/pip /home/trainer/.cache/pip /tmp/sources /run/secrets /opt/sd-scripts/.git "
              "2>/dev/null; find / -xdev \\( -name '*.whl' -o -name .source-commit \\) -print 2>/dev/null; "
              "echo END")
    proc = engine.run(trainer, [script], entrypoint=["sh", "-c"], user="root")
    assert proc.stdout.split() == ["END"], proc.stdout + proc.stderr


def test_no_certificate_of_this_machine_is_in_the_trainer(engine, trainer):
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
    proc = engine.run(trainer, grep, entrypoint=[], user="root")
    assert proc.returncode == 1 and proc.stdout == "", f"found in: {proc.stdout}{proc.stderr}"


def test_pip_check_passes_in_the_trainer(engine, trainer):
    proc = engine.run(trainer, ["-m", "pip", "check"], entrypoint=["python"])
    assert proc.returncode == 0 and "No broken requirements" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def inference(engine: Engine) -> str:
    if not (REPO / "inference_image" / "Dockerfile").is_file():
        pytest.skip("inference_image/Dockerfile does not exist (yet)")
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

