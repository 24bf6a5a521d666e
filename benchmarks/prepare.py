"""Benchmark: 200 photos at 1024-2048 px through load, face crop, bucket and resize.

Compared in one run, on the same files:
  plain   a sequential loop in one process, face detection on the full-size image
  serial  the same loop with our downscaled detection (isolates the detection gain)
  ours    the pipeline's worker pool (pipeline.run_jobs), downscaled detection
Also: face-detection time per image at full and at downscaled size.

The photos are synthesised from scikit-image's public-domain astronaut, chelsea and coffee with
random scaling, flips and colour jitter (seeded). Run: .venv/bin/python benchmarks/prepare.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from comfy_lora_cloud.dataset.bucket import BucketConfig, plan_bucket
from comfy_lora_cloud.dataset.crop import DETECT_SIZE, detect_faces, face_crop
from comfy_lora_cloud.dataset.load import load_image
from comfy_lora_cloud.dataset.pipeline import PrepareOptions, make_jobs, run_jobs


def synthesise(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from skimage import data

    bases = [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = bases[i % 3]
        long_side = int(rng.integers(1024, 2049))
        scale = long_side / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.7, 1.3)))
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.8, 1.2)))
        p = folder / f"photo_{i:03d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def plain_loop(paths: list[Path], out: Path, detect_size: int | None) -> float:
    cfg = BucketConfig()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for p in paths:
        image = load_image(p).image
        crop = face_crop(image, detect_size=detect_size)
        plan = plan_bucket(image.size, cfg, crop.box)
        image.resize(plan.size, Image.Resampling.LANCZOS, box=plan.box, reducing_gap=2.0).save(
            out / p.name, "JPEG", quality=95, subsampling=0)
    return time.perf_counter() - t0


def detection_times(paths: list[Path], k: int = 20) -> tuple[float, float, int]:
    images = [load_image(p).image for p in paths[:k]]
    detect_faces(images[0])  # build the detector outside the timing
    t0 = time.perf_counter()
    for im in images:
        detect_faces(im, detect_size=None)
    full = (time.perf_counter() - t0) / k
    t0 = time.perf_counter()
    for im in images:
        detect_faces(im, detect_size=DETECT_SIZE)
    down = (time.perf_counter() - t0) / k
    mean_px = int(np.mean([max(im.size) for im in images]))
    return full, down, mean_px


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        src.mkdir()
        paths = synthesise(src, n)
        print(f"{n} photos, long side 1024-2048 px, {workers} CPU cores")
        full, down, px = detection_times(paths)
        print(f"face detection per image: full size (mean long side {px} px) {full * 1000:.0f} ms, "
              f"downscaled to {DETECT_SIZE} px {down * 1000:.0f} ms ({full / down:.1f}x)")
        t_plain = plain_loop(paths, tmp / "plain", detect_size=None)
        t_serial = plain_loop(paths, tmp / "serial", detect_size=DETECT_SIZE)
        jobs = make_jobs(src, tmp / "ours", PrepareOptions(lora_type="character", workers=workers))
        (tmp / "ours").mkdir()
        t0 = time.perf_counter()
        results = run_jobs(jobs, workers)
        t_ours = time.perf_counter() - t0  # includes starting the worker processes
        failed = [r for r in results if r.error]
        assert not failed, failed[:3]
        print(f"plain sequential loop (full-size detection): {t_plain:6.1f} s  {n / t_plain:5.1f} images/s")
        print(f"sequential loop, downscaled detection:       {t_serial:6.1f} s  {n / t_serial:5.1f} images/s")
        print(f"pipeline, {workers} worker processes:             {t_ours:6.1f} s  {n / t_ours:5.1f} images/s")
        print(f"ratio pipeline vs plain loop: {t_plain / t_ours:.2f}x   "
              f"(parallelism alone, vs the downscaled serial loop: {t_serial / t_ours:.2f}x)")


if __name__ == "__main__":
    main()
