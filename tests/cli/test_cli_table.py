"""The CLI's bad-input table: every wrong command a newcomer is likely to type (and the cases
the doctor and models commands meet), each through the installed entry point in a subprocess,
each asserting

* the exit code of errors.py's table (2 configuration/usage, 3 storage, 4 provider, 6 dataset,
  7 training),
* a one-line message on stderr that names the problem, and no traceback anywhere,
* that nothing was written, lost or rented: the local bucket's files, the GCS bucket's objects,
  the settings files, the state store's rows and the fake vast.ai server's instances are the same
  before and after.

One seeded world serves the whole table (module scope): a home with local storage holding the
tiny dataset, a dataset without captions and a failed run; a GCS bucket (the emulator) with
datasets and cached weights for the cases that must get as far as the renting step; the fake
vast.ai server with a key. A case whose check fails says which case it was.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.training.kohya_config import MODEL_FILES
from comfy_lora_cloud.training.status import StatusReporter
from tests.cli.conftest import TINY, _entry_point
from tests.fakes.vast.server import FakeVast

VAST_KEY = "vast-table-key-0123456789abcdef"
SA_JSON = json.dumps({"type": "service_account", "project_id": "p", "client_email": "t@p.iam.gserviceaccount.com",
                      "private_key": "-----BEGIN PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----\n",
                      "token_uri": "https://oauth2.googleapis.com/token"})


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` (the "absurd dimensions" file of the issue)."""
    def chunk(t: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _jpeg(size=(320, 240), color=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


@dataclass
class World:
    root: Path
    home: Path
    gcs_home: Path
    gcs_url: str
    emulator: object
    bucket_name: str
    fake: FakeVast
    gcs: object = None  # one client for every snapshot
    dirs: dict[str, Path] = field(default_factory=dict)

    def env(self, kind: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_CLOUD_")}
        env.update(COLUMNS="200", LORA_CLOUD_VAST_URL=self.fake.url, LORA_CLOUD_VAST_API_KEY=VAST_KEY,
                   STORAGE_EMULATOR_HOST=self.emulator.url, LORA_CLOUD_HOME=str(self.home))
        if kind == "gcs":
            env.update(LORA_CLOUD_HOME=str(self.gcs_home), LORA_CLOUD_STORAGE=f"gs://{self.bucket_name}/lc",
                       LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON=SA_JSON)
        elif kind == "file-home":  # a home that cannot be created: a file is in the way
            env["LORA_CLOUD_HOME"] = str(self.dirs["a_file"] / "home")
        elif kind == "corrupt-db":
            env["LORA_CLOUD_HOME"] = str(self.dirs["corrupt_home"])
        return env

    def snapshot(self) -> dict[str, object]:
        """Everything a command could write, lose or rent: every file under the table's folder
        (name, size, mtime) but the state store and caches, the state store's row counts, the
        GCS bucket's objects and the fake vast.ai server's instances."""
        files = {}
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if rel.startswith("instances") or ".lora-cloud-meta" in rel or p.name.startswith(("state.db", "hash-cache")):
                continue
            st = p.stat()
            files[rel] = (st.st_size, st.st_mtime_ns) if p.is_file() else "dir"
        rows = {}
        for home in (self.home, self.gcs_home):
            db = home / "state.db"
            if db.exists():
                with sqlite3.connect(db) as conn:
                    rows[home.name] = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                                       for t in ("runs", "instances", "ledger")]
        blobs = sorted((b.name, b.md5_hash) for b in self.gcs.list_blobs(self.bucket_name))
        with self.fake.state.lock:
            instances = sorted(self.fake.state.instances)
        return {"files": files, "rows": rows, "blobs": blobs, "instances": instances}


def _run(world: World, args: list[str], kind: str = "local", stdin: str | None = None):
    return subprocess.run(_entry_point() + args, input=stdin, capture_output=True, text=True, env=world.env(kind),
                          cwd=world.root, timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory, gcs_emulator):
    root = tmp_path_factory.mktemp("table")
    fake = FakeVast(VAST_KEY, workdir=root / "instances")
    fake.start_in_thread()
    w = World(root=root, home=root / "home", gcs_home=root / "gcs-home", gcs_url=gcs_emulator.url,
              emulator=gcs_emulator, bucket_name=gcs_emulator.new_bucket(), fake=fake, gcs=gcs_emulator.client())
    d = w.dirs
    d["a_file"] = root / "a_file.txt"
    d["a_file"].write_text("not a folder\n")
    d["empty"] = root / "empty"
    d["empty"].mkdir()
    bad = d["bad_images"] = root / "bad_images"
    bad.mkdir()
    good = _jpeg()
    (bad / "good.jpg").write_bytes(good)
    (bad / "good.txt").write_text("ohwx, a red square")
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is not an image, it only has an image's name\n")
    (bad / "absurd.png").write_bytes(_png_header(100_000, 100_000))
    nocap = d["nocap_folder"] = root / "nocap_folder"
    nocap.mkdir()
    for i in range(3):
        (nocap / f"{i}.jpg").write_bytes(_jpeg(color=(i * 60, 90, 20)))
    other = d["other_folder"] = root / "other_folder"
    other.mkdir()
    (other / "x.jpg").write_bytes(_jpeg(color=(1, 2, 3)))
    d["out"] = root / "out"  # must stay absent: no case may create it
    d["corrupt_home"] = root / "corrupt-home"
    d["corrupt_home"].mkdir()
    (d["corrupt_home"] / "state.db").write_bytes(b"this is not a SQLite database" * 64)
    d["deep_workflow"] = root / "deep.json"  # the standard parser's RecursionError: "a bug", exit 1
    d["deep_workflow"].write_text("[" * 50_000 + "]" * 50_000)
    header = b'{"__metadata__": {"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}"
    d["deep_header"] = root / "deep.safetensors"
    d["deep_header"].write_bytes(struct.pack("<Q", len(header)) + header)

    # the local world: the tiny dataset uploaded, a dataset without captions, a failed run
    env = w.env("local")
    for args in (["dataset", "upload", str(TINY), "--name", "tiny"], ["costs", "--offline"]):
        subprocess.run(_entry_point() + args, env=env, check=True, capture_output=True, timeout=120)
    local = LocalStorage(w.home / "bucket")
    for i in range(3):
        local.write_bytes(f"datasets/nocap/{i}.jpg", _jpeg(color=(i, 1, 1)))
    local.write_bytes("datasets/nocap/dataset.json", b'{"settings": {"lora_type": "style"}}')
    StatusReporter(local, "run-failed", min_interval=0).update(
        force=True, state=RunState.FAILED, error="kohya failed (exit 1): CUDA out of memory", step=10, total_steps=100)

    # the GCS world: datasets that get as far as the renting step, weights cached
    genv = w.env("gcs")
    subprocess.run(_entry_point() + ["dataset", "upload", str(TINY), "--name", "tiny"], env=genv, check=True,
                   capture_output=True, timeout=120)
    subprocess.run(_entry_point() + ["costs", "--offline"], env=genv, check=True, capture_output=True, timeout=120)
    bucket = gcs_emulator.client().bucket(w.bucket_name)
    for filename, _repo in MODEL_FILES.values():
        bucket.blob(f"lc/models/{filename}").upload_from_string(b"weights")
    for i in range(3):
        bucket.blob(f"lc/datasets/nocap/{i}.jpg").upload_from_string(_jpeg(color=(i, 9, 9)))
    bucket.blob("lc/datasets/nocap/dataset.json").upload_from_string(b"{}")
    bucket.blob("lc/datasets/broken/0.jpg").upload_from_string(good[: len(good) // 3])
    bucket.blob("lc/datasets/broken/0.txt").upload_from_string(b"ohwx")
    bucket.blob("lc/datasets/broken/1.jpg").upload_from_string(good)
    bucket.blob("lc/datasets/broken/1.txt").upload_from_string(b"ohwx")
    bucket.blob("lc/datasets/broken/dataset.json").upload_from_string(b"{}")
    yield w
    fake.stop()


# (id, args, exit code, words the message must hold, environment, stdin)
CASES: list[tuple[str, list[str], int, str, str, str | None]] = [
    # ---- names ---------------------------------------------------------------------------------
    ("name escapes the folder", ["dataset", "upload", "{TINY}", "--name", "../escape"], 2, "dataset name", "local", None),
    ("name with a slash", ["dataset", "upload", "{TINY}", "--name", "a/b"], 2, "must not contain", "local", None),
    ("name with a tab", ["dataset", "upload", "{TINY}", "--name", "bad\tname"], 2, "control characters", "local", None),
    ("name '..'", ["dataset", "upload", "{TINY}", "--name", ".."], 2, "dataset name", "local", None),
    ("name with a leading space", ["dataset", "upload", "{TINY}", "--name", " lead"], 2, "leading or trailing", "local", None),
    ("name of 101 letters", ["dataset", "upload", "{TINY}", "--name", "é" * 101], 2, "at most 100", "local", None),
    ("name with a right-to-left override", ["dataset", "upload", "{TINY}", "--name", "a\u202eb"], 2, "only letters",
     "local", None),
    ("name with a look-alike slash", ["dataset", "upload", "{TINY}", "--name", "a\u2215b"], 2, "only letters", "local", None),
    # ---- dataset upload --------------------------------------------------------------------------
    ("upload: missing folder", ["dataset", "upload", "{ROOT}/no-such-folder", "--name", "x"], 6, "does not exist",
     "local", None),
    ("upload: a file as the folder", ["dataset", "upload", "{a_file}", "--name", "x"], 6, "is a file, not a folder",
     "local", None),
    ("upload: a folder without images", ["dataset", "upload", "{empty}", "--name", "x"], 6, "holds no images", "local", None),
    ("upload: truncated, empty, non-image, absurd", ["dataset", "upload", "{bad_images}", "--name", "bad"], 6,
     "4 of 5 image(s)", "local", None),
    ("upload: the reasons are named", ["dataset", "upload", "{bad_images}", "--name", "bad"], 6,
     "truncated.jpg: is damaged or truncated", "local", None),
    ("upload: absurd dimensions named", ["dataset", "upload", "{bad_images}", "--name", "bad"], 6, "absurd.png: refused",
     "local", None),
    ("upload: bad images to GCS", ["dataset", "upload", "{bad_images}", "--name", "bad"], 6, "empty.png: is empty",
     "gcs", None),
    ("upload onto an existing dataset", ["dataset", "upload", "{other_folder}", "--name", "tiny"], 6,
     "already exists", "local", None),
    ("upload with --replace and --merge", ["dataset", "upload", "{TINY}", "--name", "x", "--replace", "--merge"], 2,
     "not both", "local", None),
    ("upload without --name", ["dataset", "upload", "{TINY}"], 2, "--name", "local", None),
    ("upload with an unknown option", ["dataset", "upload", "{TINY}", "--name", "x", "--bogus"], 2, "--bogus", "local", None),
    # ---- dataset prepare / validate / download / delete ----------------------------------------
    ("prepare: missing source folder", ["dataset", "prepare", "{ROOT}/no/such/photos", "--name", "x"], 6, "no folder",
     "local", None),
    ("prepare: a file as the source", ["dataset", "prepare", "{a_file}", "--name", "x"], 6, "is a file", "local", None),
    ("prepare: an unknown dataset as the source", ["dataset", "prepare", "nosuchset", "--name", "x"], 3,
     "no dataset named 'nosuchset'", "local", None),
    ("prepare: name taken, checked first", ["dataset", "prepare", "{TINY}", "--name", "tiny"], 6, "--replace", "local", None),
    ("prepare: bad --type", ["dataset", "prepare", "{TINY}", "--name", "x", "--type", "portrait"], 2, "unknown LoRA type",
     "local", None),
    ("prepare: bad --caption", ["dataset", "prepare", "{TINY}", "--name", "x", "--caption", "gpt"], 2,
     "unknown caption model", "local", None),
    ("prepare: a 60,000-character --trigger", ["dataset", "prepare", "{TINY}", "--name", "x", "--trigger", "t" * 60_000],
     2, "at most 200 printable characters", "local", None),
    ("prepare: --resolution 100000", ["dataset", "prepare", "{TINY}", "--name", "x", "--resolution", "100000"], 2,
     "--resolution", "local", None),
    ("prepare: --resolution 100", ["dataset", "prepare", "{TINY}", "--name", "x", "--resolution", "100"], 2,
     "--resolution", "local", None),
    ("prepare: --resolution not a multiple of 64", ["dataset", "prepare", "{TINY}", "--name", "x", "--resolution", "1000"],
     2, "multiple of 64", "local", None),
    ("prepare: --workers 0", ["dataset", "prepare", "{TINY}", "--name", "x", "--workers", "0"], 2, "--workers", "local", None),
    ("prepare: FAILED report exits 6 and uploads nothing",
     ["dataset", "prepare", "{nocap_folder}", "--name", "x", "--type", "style", "--caption", "none", "--workers", "1"], 6,
     "did not pass validation, so nothing was uploaded", "local", None),
    # (a caption-model folder without a processor: tests/dataset/test_caption.py, in-process, where
    # transformers is loaded anyway; a subprocess would import it for that one line)
    ("validate: unknown dataset", ["dataset", "validate", "ghost"], 3, "no dataset named 'ghost'", "local", None),
    ("validate: bad name", ["dataset", "validate", "../x"], 2, "dataset name", "local", None),
    ("download: unknown dataset", ["dataset", "download", "ghost", "{ROOT}/out"], 3, "no dataset named", "local", None),
    ("download: into a file", ["dataset", "download", "tiny", "{a_file}"], 3, "not a folder", "local", None),
    ("delete without --yes and no terminal", ["dataset", "delete", "tiny"], 2, "--yes", "local", None),
    ("delete: unknown dataset", ["dataset", "delete", "ghost", "--yes"], 3, "no dataset named", "local", None),
    # ---- LoRAs -----------------------------------------------------------------------------------
    ("lora delete: unknown", ["lora", "delete", "ghost", "--yes"], 3, "no LoRA named", "local", None),
    ("lora download: unknown", ["lora", "download", "ghost", "--to", "{ROOT}/out"], 3, "ghost", "local", None),
    ("lora download: bad name", ["lora", "download", "../x", "--to", "{ROOT}/out"], 2, "LoRA name", "local", None),
    # ---- train plan --------------------------------------------------------------------------------
    ("plan: unknown dataset without --images", ["train", "plan", "--dataset", "nope", "--out", "{ROOT}/out"], 2,
     "--images", "local", None),
    ("plan: bad --type", ["train", "plan", "--dataset", "tiny", "--type", "anime", "--out", "{ROOT}/out"], 2,
     "unknown LoRA type", "local", None),
    ("plan: unknown GPU", ["train", "plan", "--dataset", "tiny", "--gpu", "tpu-v5", "--out", "{ROOT}/out"], 2,
     "unknown GPU", "local", None),
    ("plan: too little VRAM", ["train", "plan", "--dataset", "tiny", "--vram", "12", "--out", "{ROOT}/out"], 2,
     "too little", "local", None),
    ("plan: misspelled --set key", ["train", "plan", "--dataset", "tiny", "--set", "lerning_rate=1e-4", "--out",
                                    "{ROOT}/out"], 2, "did you mean 'learning_rate'", "local", None),
    ("plan: negative learning rate", ["train", "plan", "--dataset", "tiny", "--set", "learning_rate=-1", "--out",
                                      "{ROOT}/out"], 2, "is outside", "local", None),
    ("plan: rank 0", ["train", "plan", "--dataset", "tiny", "--set", "network_dim=0", "--out", "{ROOT}/out"], 2,
     "is outside", "local", None),
    ("plan: --set network_dim of 401 digits", ["train", "plan", "--dataset", "tiny", "--set",
                                               "network_dim=" + "9" * 401, "--out", "{ROOT}/out"], 2, "401 digits",
     "local", None),
    ("plan: --set of 5000 digits", ["train", "plan", "--dataset", "tiny", "--set", "network_dim=" + "9" * 5000, "--out",
                                    "{ROOT}/out"], 2, "not a number or a list we can read", "local", None),
    ("plan: --set nested 4000 deep", ["train", "plan", "--dataset", "tiny", "--set",
                                      "network_args=" + "[" * 4000 + "]" * 4000, "--out", "{ROOT}/out"], 2,
     "not a number or a list we can read", "local", None),
    ("comfy run: a workflow nested 50,000 deep", ["comfy", "run", "{deep_workflow}"], 2, "nested deeper", "local",
     None),
    ("lora show: a header nested 50,000 deep", ["lora", "show", "{deep_header}"], 6, "nested deeper", "local", None),
    ("plan: --set without a value", ["train", "plan", "--dataset", "tiny", "--set", "novalue", "--out", "{ROOT}/out"], 2,
     "key=value", "local", None),
    ("plan: --set of the wrong type", ["train", "plan", "--dataset", "tiny", "--set", 'resolution="big"', "--out",
                                       "{ROOT}/out"], 2, "expected int", "local", None),
    ("plan: unknown --set section", ["train", "plan", "--dataset", "tiny", "--set", "kohya.x=1", "--out", "{ROOT}/out"],
     2, "unknown section", "local", None),
    ("plan: --dph -1", ["train", "plan", "--dataset", "tiny", "--dph=-1", "--out", "{ROOT}/out"], 2, "--dph", "local", None),
    ("plan: --dph nan", ["train", "plan", "--dataset", "tiny", "--dph", "nan", "--out", "{ROOT}/out"], 2, "--dph",
     "local", None),
    ("plan: --images 0", ["train", "plan", "--dataset", "tiny", "--images", "0", "--out", "{ROOT}/out"], 2, "--images",
     "local", None),
    ("plan: --out is a file", ["train", "plan", "--dataset", "tiny", "--out", "{a_file}"], 2, "is a file", "local", None),
    # ---- train start: refused before anything is rented ------------------------------------------
    ("start: --provider bogus", ["train", "start", "--dataset", "tiny", "--provider", "bogus"], 2,
     "provider must be vast or local", "local", None),
    ("start: local storage on vast.ai", ["train", "start", "--dataset", "tiny"], 2, "cannot reach a local folder",
     "local", None),
    ("start: unknown dataset", ["train", "start", "--dataset", "nope"], 3, "no dataset named 'nope'", "local", None),
    ("start: bad dataset name", ["train", "start", "--dataset", "a/b"], 2, "dataset name", "local", None),
    ("start: misspelled --set key", ["train", "start", "--dataset", "tiny", "--set", "lerning_rate=1e-4"], 2,
     "did you mean", "local", None),
    ("start: images without captions (GCS)", ["train", "start", "--dataset", "nocap", "--type", "style"], 6,
     "cannot be trained, so nothing was rented", "gcs", None),
    ("start: a truncated image (GCS)", ["train", "start", "--dataset", "broken", "--trigger", "ohwx"], 6,
     "0.jpg: not an image", "gcs", None),
    ("start: misspelled key (GCS)", ["train", "start", "--dataset", "tiny", "--set", "netwrk_dim=8"], 2,
     "did you mean 'network_dim'", "gcs", None),
    ("start: unknown dataset (GCS)", ["train", "start", "--dataset", "nope"], 3, "no dataset named", "gcs", None),
    ("start: --vram nan", ["train", "start", "--dataset", "tiny", "--vram", "nan"], 2, "--vram", "gcs", None),
    # ---- train status / logs / samples / stop ----------------------------------------------------
    ("status: unknown run", ["train", "status", "nope"], 3, "no status", "local", None),
    ("status --follow: unknown run ends", ["train", "status", "nope", "--follow", "--interval", "0.05"], 3, "no run 'nope'",
     "local", None),
    ("status: a failed run exits 7", ["train", "status", "run-failed"], 7, "", "local", None),
    ("status --follow: --interval nan", ["train", "status", "run-failed", "--follow", "--interval", "nan"], 2,
     "--interval", "local", None),
    ("logs: unknown run", ["train", "logs", "nope"], 3, "no run 'nope'", "local", None),
    ("samples: unknown run", ["train", "samples", "nope", "--out", "{ROOT}/out"], 3, "no run 'nope'", "local", None),
    ("samples: --out is a file", ["train", "samples", "run-failed", "--out", "{a_file}"], 2, "is a file", "local", None),
    ("stop: unknown run", ["train", "stop", "nope"], 3, "no run 'nope'", "local", None),
    # ---- settings, secrets, budgets -------------------------------------------------------------
    ("config: unknown setting", ["config", "set", "lerning_rate", "1"], 2, "unknown setting", "local", None),
    ("config: negative max_dph", ["config", "set", "max_dph", "-1"], 2, "max_dph", "local", None),
    ("config: max_dph nan", ["config", "set", "max_dph", "nan"], 2, "max_dph", "local", None),
    ("config: storage s3://", ["config", "set", "storage", "s3://bucket/x"], 2, "s3:// is not supported", "local", None),
    ("config: storage http://", ["config", "set", "storage", "http://example.com/x"], 2, "is not supported", "local", None),
    ("config: storage 'gs:// bucket'", ["config", "set", "storage", "gs:// bucket"], 2, "not a valid GCS bucket name",
     "local", None),
    ("config: relative storage folder", ["config", "set", "storage", "relative/folder"], 2, "absolute folder", "local",
     None),
    ("config: a service-account key stored as '{'", ["config", "set", "gcs_service_account_json", "-"], 2,
     "is not JSON", "local", "{\n"),
    ("config: secret from a missing file", ["config", "set", "hf_token", "--from-file", "{ROOT}/no-such-file"], 2,
     "cannot be read", "local", None),
    ("budget: negative", ["budget", "set", "max_dph", "-5"], 2, "max_dph", "local", None),
    ("budget: unknown key", ["budget", "set", "max_gpus", "1"], 2, "max_gpus", "local", None),
    ("budget: zero hours", ["budget", "set", "max_run_hours", "0"], 2, "max_run_hours", "local", None),
    # ---- offers, sync, instances ----------------------------------------------------------------
    ("offers: tier 12", ["offers", "--tier", "12"], 2, "too little", "local", None),
    ("offers: --steps 0", ["offers", "--steps", "0"], 2, "--steps", "local", None),
    ("offers: reliability 2", ["offers", "--min-reliability", "2"], 2, "--min-reliability", "local", None),
    ("offers: unknown preset", ["offers", "--for", "anime"], 2, "anime", "local", None),
    ("sync: prefix escapes", ["sync", "push", "{TINY}", "../up"], 2, "invalid", "local", None),
    ("sync: missing folder", ["sync", "push", "{ROOT}/no-such-folder", "workflows/x"], 2, "is not a folder", "local", None),
    ("sync: --delete of a top-level folder", ["sync", "pull", "datasets/", "{ROOT}/out", "--delete", "--yes"], 2,
     "datasets/", "local", None),
    ("instances: destroy an unknown id", ["instances", "destroy", "999999", "--yes"], 3, "999999", "local", None),
    ("unknown command", ["frobnicate"], 2, "frobnicate", "local", None),
    # ---- a home that cannot be written, a damaged state store ------------------------------------
    ("file in the way of home: config set", ["config", "set", "max_dph", "1"], 3, "Not a directory", "file-home", None),
    ("file in the way of home: budget set", ["budget", "set", "max_dph", "1"], 3, "Not a directory", "file-home", None),
    ("file in the way of home: costs", ["costs", "--offline"], 3, "Not a directory", "file-home", None),
    ("file in the way of home: train start", ["train", "start", "--dataset", "tiny"], 3, "Not a directory", "file-home",
     None),
    # a damaged state store no longer stops a command: tests/unit/test_damaged_home.py (set aside, rebuilt)
]


def _expand(world: World, args: list[str]) -> list[str]:
    subs = {"{TINY}": str(TINY), "{ROOT}": str(world.root), **{f"{{{k}}}": str(v) for k, v in world.dirs.items()}}
    out = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        out.append(a)
    return out


def test_the_table_is_big_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, case):
    name, args, code, words, kind, stdin = case
    before = world.snapshot()
    proc = _run(world, _expand(world, args), kind, stdin)
    after = world.snapshot()
    assert proc.returncode == code, f"{name}: exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, name
    if code != 7:
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert lines and words in proc.stderr, f"{name}: {proc.stderr!r}"
        assert "unexpected" not in proc.stderr, f"{name}: a bug, not a message: {proc.stderr}"
    else:
        assert "failed" in proc.stdout and "error: kohya failed" in proc.stdout
    assert after == before, f"{name}: something was written, lost or rented"
    assert not world.dirs["out"].exists(), f"{name} created its output folder"


JSON_CASES = [
    (["dataset", "upload", "{ROOT}/no-such-folder", "--name", "x", "--json"], 6, "DatasetError"),
    (["train", "plan", "--json", "--dataset", "tiny", "--set", "lerning_rate=1", "--out", "{ROOT}/out"], 2, "ConfigError"),
    (["dataset", "list", "--bogus", "--json"], 2, "UsageError"),
    (["--json", "train", "status", "nope"], 3, "ObjectNotFound"),
]


@pytest.mark.parametrize("args,code,kind", JSON_CASES, ids=[" ".join(c[0][:3]) for c in JSON_CASES])
def test_errors_are_json_under_json_anywhere(world, args, code, kind):
    proc = _run(world, _expand(world, args))
    assert proc.returncode == code, proc.stderr
    data = json.loads(proc.stdout)
    assert data["error"] == kind and data["exit_code"] == code and data["message"]
    assert "Traceback" not in proc.stderr


def test_json_at_the_end_of_a_good_command(world):
    proc = _run(world, ["dataset", "list", "--json"])
    assert proc.returncode == 0 and [d["name"] for d in json.loads(proc.stdout)] == ["nocap", "tiny"]
