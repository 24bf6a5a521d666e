"""`lora-cloud dataset prepare` / `validate` at the edge: exit codes, JSON, what lands in storage."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.main import app
from comfy_lora_cloud.storage.local import LocalStorage
from tests.dataset.conftest import astronaut


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def folder(tmp_path, photos):
    src = tmp_path / "photos"
    src.mkdir()
    photos["astronaut"].save(src / "astro.jpg")
    photos["coffee"].save(src / "coffee.png")
    (src / "broken.jpg").write_bytes(b"nope")
    return src


def run(home, *args):
    result = CliRunner().invoke(app, ["--home", str(home), "--json", *args])
    return result.exit_code, result.stdout, result.stderr


def bucket(home) -> LocalStorage:
    return LocalStorage(str(home / "bucket"))


def test_prepare_a_folder_then_validate(home, folder):
    code, out, _ = run(home, "dataset", "prepare", str(folder), "--name", "astro", "--trigger", "ohwx",
                       "--caption", "none", "--workers", "1")
    assert code == 0, out
    data = json.loads(out)
    assert data["images"] == 2 and [s["source"] for s in data["skipped"]] == ["broken.jpg"]
    keys = sorted(o.key for o in bucket(home).list("datasets/astro/").objects)
    assert keys == ["datasets/astro/astro.jpg", "datasets/astro/astro.txt", "datasets/astro/coffee.jpg",
                    "datasets/astro/coffee.txt", "datasets/astro/dataset.json"]
    manifest = json.loads(bucket(home).read_bytes("datasets/astro/dataset.json"))
    assert [f["image"] for f in manifest["files"]] == ["astro.jpg", "coffee.jpg"]
    assert bucket(home).read_bytes("datasets/astro/astro.txt") == b"ohwx\n"

    code, out, _ = run(home, "dataset", "validate", "astro")
    assert code == 0 and json.loads(out)["ok"] is True and json.loads(out)["trigger"] == "ohwx"

    # the name is taken: refuse unless --replace
    code, _, err = run(home, "dataset", "prepare", str(folder), "--name", "astro", "--workers", "1")
    assert code == 6 and "already exists" in err

    # a stored dataset can be the source, and --replace removes what the new version lacks
    code, out, _ = run(home, "dataset", "prepare", "astro", "--name", "astro", "--type", "style",
                       "--trigger", "zz", "--replace", "--workers", "1")
    assert code == 0, out
    manifest = json.loads(bucket(home).read_bytes("datasets/astro/dataset.json"))
    assert manifest["settings"]["lora_type"] == "style" and manifest["skipped"] == []
    # existing captions travelled with the source and were kept
    assert [f["caption_origin"] for f in manifest["files"]] == ["existing", "existing"]


def test_validate_fails_with_exit_6(home):
    s = bucket(home)
    s.write_bytes("datasets/bad/a.png", b"\x89PNG\r\n\x1a\nbroken")
    s.write_bytes("datasets/bad/a.txt", b"x")
    code, out, _ = run(home, "dataset", "validate", "bad")
    assert code == 6 and json.loads(out)["corrupt"] == ["a.png"]
    code, _, err = run(home, "dataset", "validate", "ghost")
    assert code == 3 and "no dataset named 'ghost'" in err  # a missing dataset is ObjectNotFound everywhere


def test_prepare_with_a_local_florence_model(home, tmp_path, tiny_florence):
    src = tmp_path / "one"
    src.mkdir()
    astronaut(600).save(src / "a.jpg")
    code, out, err = run(home, "dataset", "prepare", str(src), "--name", "cap", "--trigger", "ohwx",
                         "--caption", "florence", "--caption-model", str(tiny_florence), "--workers", "1")
    assert code == 0, err
    caption = bucket(home).read_bytes("datasets/cap/a.txt").decode()
    assert caption.startswith("ohwx")
    manifest = json.loads(bucket(home).read_bytes("datasets/cap/dataset.json"))
    assert manifest["files"][0]["caption_origin"] == "model"
    assert manifest["settings"]["caption_model"] == tiny_florence.name


def test_bad_arguments_are_clear(home, folder):
    code, _, err = run(home, "dataset", "prepare", str(folder), "--name", "x", "--type", "portrait")
    assert code == 2 and "unknown LoRA type" in err  # a bad argument, not a bad dataset
    code, _, err = run(home, "dataset", "prepare", str(folder), "--name", "../x")
    assert code == 2
    code, _, err = run(home, "dataset", "prepare", "no-such-thing", "--name", "x")
    assert code == 3 and "no dataset named 'no-such-thing'" in err
