"""Benchmark: what one thumbnail request costs for an image a hostile host put in the bucket.

Compared in one run, on the same bytes, each case in a fresh subprocess (peak memory is the
child's maximum resident set):
  plain   what the thumbnail route did before its bomb checks: Pillow open, EXIF transpose, thumbnail
  ours    service.media.make_thumbnail: allowlisted formats, pixel limit from the header,
          JPEG draft scaling
on a 12000x12000 PNG of zeros (about 0.45 MB on disk, 432 MB of pixels) and, as the everyday
case, a 6000x4000 camera-size JPEG (both must still work for ours).

Run: .venv/bin/python benchmarks/thumbnail_bomb.py
"""

from __future__ import annotations

import io
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path


def png_of_zeros(width: int, height: int) -> bytes:
    """A real, fully decodable PNG, streamed so building it needs no 432 MB buffer."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * (3 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def camera_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((6000, 4000), 40).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def plain(data: bytes) -> str:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = None  # the old route: no limit but Pillow's own warning
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im)
        im.thumbnail((256, 256))
        im.convert("RGB").save(io.BytesIO(), "JPEG")
    return "thumbnail made"


def ours(data: bytes) -> str:
    from comfy_lora_cloud.errors import DatasetError
    from comfy_lora_cloud.service.library.media import make_thumbnail

    try:
        make_thumbnail(data, 256)
    except DatasetError as exc:
        return f"refused: {exc.message[:60]}"
    return "thumbnail made"


def child(case: str, path: str) -> None:
    import PIL.Image  # noqa: F401  (imports are not what is measured)

    import comfy_lora_cloud.service.library.media  # noqa: F401

    data = Path(path).read_bytes()
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    outcome = {"plain": plain, "ours": ours}[case](data)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "added_mb": peak_mb - base_mb, "outcome": outcome}))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = {"12000x12000 PNG bomb": Path(tmp) / "bomb.png", "6000x4000 camera JPEG": Path(tmp) / "photo.jpg"}
        files["12000x12000 PNG bomb"].write_bytes(png_of_zeros(12_000, 12_000))
        files["6000x4000 camera JPEG"].write_bytes(camera_jpeg())
        for label, path in files.items():
            print(f"{label}: {path.stat().st_size / 1e6:.2f} MB on disk")
            results = {}
            for case in ("plain", "ours"):
                out = subprocess.run([sys.executable, __file__, "--child", case, str(path)], capture_output=True,
                                     text=True, check=True)
                results[case] = json.loads(out.stdout.strip().splitlines()[-1])
                r = results[case]
                print(f"  {case:5s} {r['seconds']:7.3f} s  peak {r['peak_mb']:6.0f} MB "
                      f"(+{r['added_mb']:.0f} MB over the process before the call)  {r['outcome']}")
            p, o = results["plain"], results["ours"]
            print(f"  plain/ours: time x{p['seconds'] / max(o['seconds'], 1e-6):.0f}, "
                  f"memory added x{p['added_mb'] / max(o['added_mb'], 1):.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
