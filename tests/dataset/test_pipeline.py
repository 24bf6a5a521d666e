"""The pipeline end to end on real photos plus a corpus of bad files, in worker processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from comfy_lora_cloud.dataset.bucket import bucket_resolutions
from comfy_lora_cloud.dataset.pipeline import PrepareOptions, prepare_dataset, safe_stem
from comfy_lora_cloud.errors import ConfigError, DatasetError
from comfy_lora_cloud.storage.base import checksum_file
from tests.dataset.conftest import astronaut, contains, face_at
from tests.dataset.corpus import BAD_FILES, make_bad_corpus


def _snapshot(folder: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        digest = hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[p.relative_to(folder).as_posix()] = (st.st_mtime_ns, st.st_size, digest)
    return out


@pytest.fixture
def source(tmp_path, photos) -> Path:
    src = tmp_path / "photos"
    make_bad_corpus(src, astronaut(256), tmp_path / "outside" / "secret.jpg")
    photos["astronaut"].save(src / "astro.jpg", quality=92)
    (src / "astro.txt").write_text("ohwx in a spacesuit, my own caption\n")
    ImageOps.mirror(astronaut(1400)).save(src / "Café photo #1 (copy).PNG")
    photos["chelsea"].save(src / "A.webp")
    (src / "sub").mkdir()
    photos["coffee"].save(src / "sub" / "a.jpg")
    (src / ".DS_Store").write_bytes(b"\0\0")
    return src


def test_prepare_processes_good_files_and_reports_each_bad_one(tmp_path, source):
    before = _snapshot(source)
    seen = []
    opts = PrepareOptions(lora_type="character", trigger="ohwx", workers=2)
    result = prepare_dataset(source, tmp_path / "out", opts, name="astro-set", progress=lambda *a: seen.append(a))
    m = result.manifest
    # every bad file: one clear entry, naming it
    skipped = {s["source"]: s["error"] for s in m["skipped"]}
    assert set(skipped) == set(BAD_FILES)
    for name, phrase in BAD_FILES.items():
        assert phrase in skipped[name] and name in skipped[name]
    # every good file processed, with portable, unique names, in source order
    assert [f["source"] for f in m["files"]] == ["A.webp", "Café photo #1 (copy).PNG", "astro.jpg", "sub/a.jpg"]
    assert [f["image"] for f in m["files"]] == ["A.jpg", "Caf_photo_1_copy.jpg", "astro.jpg", "a-2.jpg"]
    out = tmp_path / "out"
    resos = set(bucket_resolutions(opts.bucket))
    for f in m["files"]:
        img = Image.open(out / f["image"])
        assert img.size == (f["width"], f["height"])
        bw, bh = f["bucket"]
        assert (bw, bh) in resos and f["width"] * bh == f["height"] * bw  # exact bucket aspect
        sums = checksum_file(out / f["image"])
        assert (f["size"], f["md5"], f["crc32c"]) == (sums.size, sums.md5, sums.crc32c)
        assert (out / f["caption_file"]).read_text().strip() == f["caption"]
    by_source = {f["source"]: f for f in m["files"]}
    astro = by_source["astro.jpg"]
    assert astro["crop_method"] == "face" and contains(astro["crop_box"], face_at(1024), slack=1)
    assert (astro["caption"], astro["caption_origin"]) == ("ohwx in a spacesuit, my own caption", "existing")
    assert by_source["A.webp"]["crop_method"] == "fallback-center"
    assert by_source["sub/a.jpg"]["caption"] == "ohwx"
    assert any("no face found" in w for w in m["warnings"])
    assert m["settings"]["trigger"] == "ohwx" and m["settings"]["crop"] == "face"
    assert m["settings"]["bucket"]["resolution"] == 1024 and m["name"] == "astro-set"
    assert json.loads((out / "dataset.json").read_text()) == m
    # a mirrored photo is a different training image: both hashes change, so it is not a duplicate
    assert m["duplicates"] == []
    # progress: one call per file, ending at the total
    process = [a for a in seen if a[0] == "process"]
    assert len(process) == len(m["files"]) + len(m["skipped"]) and process[-1][1] == process[-1][2]
    # the report is there and consistent
    assert result.report.count == 4 and result.report.ok
    # the source folder is exactly as it was
    assert _snapshot(source) == before


def test_results_do_not_depend_on_worker_count(tmp_path, source):
    opts = PrepareOptions(lora_type="style", trigger="zz")
    one = prepare_dataset(source, tmp_path / "one", PrepareOptions(**{**opts.__dict__, "workers": 1})).manifest
    two = prepare_dataset(source, tmp_path / "two", PrepareOptions(**{**opts.__dict__, "workers": 2})).manifest
    assert one == two
    assert all(f["crop_method"] == "none" for f in one["files"])


def test_output_inside_source_is_refused(tmp_path, source):
    with pytest.raises(DatasetError, match="must not be inside the source"):
        prepare_dataset(source, source / "out", PrepareOptions(workers=1))
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_dataset(tmp_path / "missing", tmp_path / "o", PrepareOptions(workers=1))


def test_options_are_checked():
    with pytest.raises(ConfigError, match="unknown LoRA type"):
        PrepareOptions(lora_type="portrait")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown caption model"):
        PrepareOptions(caption="gpt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trigger"):
        PrepareOptions(trigger="  ")


def test_safe_stem():
    assert safe_stem("dir/My Photo (1).JPG") == "My_Photo_1"
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("中文.png") == "image"


def test_importing_the_package_is_cheap():
    import subprocess
    import sys

    code = ("import sys, comfy_lora_cloud.dataset, comfy_lora_cloud.cli.dataset_prepare; "
            "heavy = {'cv2', 'dlib', 'face_recognition', 'rembg', 'torch', 'transformers', 'onnxruntime'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def crash_on_second(job):
    """A stand-in for process_one whose worker dies (as a native crash would) on job 1."""
    import os

    from comfy_lora_cloud.dataset.pipeline import ItemResult

    if job.index == 1:
        os._exit(139)
    return ItemResult(job.index, job.rel, image=f"{job.out_stem}.jpg")


def test_a_crashing_worker_fails_only_its_own_file(tmp_path):
    from comfy_lora_cloud.dataset.pipeline import Job, run_jobs

    jobs = [Job(i, f"/nowhere/{i}.jpg", f"{i}.jpg", "/nowhere", f"img{i}", str(tmp_path), PrepareOptions())
            for i in range(4)]
    results = run_jobs(jobs, workers=2, fn=crash_on_second)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert results[1].error == "1.jpg: the worker process crashed on this file"
    assert [r.image for r in results if r.index != 1] == ["img0.jpg", "img2.jpg", "img3.jpg"]
