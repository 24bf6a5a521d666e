"""Validation report: errors and warnings a user can act on, as JSON and as text."""

from __future__ import annotations

import json

from PIL import Image

from comfy_lora_cloud.dataset.validate import validate_folder
from tests.dataset.conftest import astronaut


def test_a_clean_dataset_passes(tmp_path, photos):
    photos["coffee"].crop((0, 0, 1024, 768)).save(tmp_path / "coffee.jpg")
    astronaut(1024).save(tmp_path / "astro.png")
    (tmp_path / "coffee.txt").write_text("ohwx, a cup of coffee\n")
    (tmp_path / "astro.txt").write_text("ohwx, an astronaut\n")
    report = validate_folder(tmp_path, trigger="ohwx", lora_type="concept")
    assert report.ok and report.count == 2
    assert report.buckets == {"1024x768": 1, "1024x1024": 1}
    assert report.warnings == ["2 images; a concept LoRA usually wants 15-60"]
    assert "OK" in report.to_text()


def test_problems_are_reported(tmp_path, photos):
    a = astronaut(1024)
    a.save(tmp_path / "a.jpg")
    a.resize((1000, 1000)).save(tmp_path / "a-copy.jpg")  # near-duplicate; not a bucket size but exact aspect
    photos["chelsea"].save(tmp_path / "cat.jpg")  # 1353x900 (1.50) goes to 1024x704 (1.45): kohya crops 3%
    photos["coffee"].resize((300, 200)).save(tmp_path / "small.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "a.txt").write_text("ohwx, a person")
    (tmp_path / "a-copy.txt").write_text("an astronaut")  # trigger missing
    (tmp_path / "cat.txt").write_text("   ")  # empty caption
    (tmp_path / "small.txt").write_text("ohwx small")
    report = validate_folder(tmp_path, trigger="ohwx", lora_type="character")
    assert not report.ok
    assert report.count == 4 and report.corrupt == ["broken.png"]
    assert report.missing_captions == ["cat.jpg"]
    assert report.duplicates == [["a-copy.jpg", "a.jpg"]]
    text = "\n".join(report.errors + report.warnings)
    assert "broken.png" in text and "1 image(s) without a caption" in text
    assert "trigger word 'ohwx' missing from 1 caption(s): a-copy.jpg" in text
    assert "2 image(s) not at a bucket's exact aspect ratio; kohya will crop up to 3% off them: cat.jpg, small.jpg" in text
    assert "smaller than their bucket" in text and "small.jpg" in text
    assert "near-duplicates: a-copy.jpg, a.jpg" in text
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["count"] == 4 and data["corrupt"] == ["broken.png"]
    assert report.to_text().splitlines()[-1] == "FAILED: 2 error(s)"


def test_empty_folder_is_an_error(tmp_path):
    report = validate_folder(tmp_path)
    assert report.errors == ["no readable images"]


def test_settings_come_from_the_manifest(tmp_path):
    Image.new("RGB", (512, 512), (1, 2, 3)).save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("a plain square")
    (tmp_path / "dataset.json").write_text(json.dumps({"settings": {
        "trigger": "zzt", "lora_type": "style",
        "bucket": {"resolution": 512, "min_reso": 256, "max_reso": 1024, "steps": 64, "upscale": False}}}))
    report = validate_folder(tmp_path)
    assert report.trigger == "zzt" and report.buckets == {"512x512": 1}
    assert any("trigger word 'zzt' missing" in w for w in report.warnings)
    assert not any("smaller than their bucket" in w for w in report.warnings)  # 512 is the bucket here
