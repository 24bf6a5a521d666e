"""service/library/media.py: bucket files typed by their bytes, and thumbnails that a hostile image cannot
turn into a denial of service (byte and pixel limits, a bounded decoding pool, a cache)."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest
from PIL import Image

from comfy_lora_cloud.errors import DatasetError
from comfy_lora_cloud.service.library.media import (ImageSniffer, Thumbnailer, make_thumbnail, served_file, sniff_image)
from comfy_lora_cloud.storage import LocalStorage

from tests.comfy import hostile


def _image(fmt: str, size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt, ctype", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"),
                                        ("WEBP", "image/webp"), ("BMP", "image/bmp"), ("TIFF", "image/tiff")])
def test_allowlisted_images_are_typed_by_their_bytes_whatever_the_name(fmt, ctype):
    served = served_file(_image(fmt), "named.html")
    assert served.content_type == ctype and served.is_image
    assert served.headers["X-Content-Type-Options"] == "nosniff" and "Content-Disposition" not in served.headers


@pytest.mark.parametrize("name, body", [("x.html", hostile.HTML_SAMPLE.encode()), ("x.svg", hostile.SVG_SAMPLE.encode()),
                                        ("x.png", hostile.HTML_SAMPLE.encode()), ('a"b\r\nX-Evil: 1.png', b"<b>"),
                                        ("x.png", b"")])
def test_anything_else_is_a_sandboxed_attachment(name, body):
    served = served_file(body, name)
    assert served.content_type == "application/octet-stream" and not served.is_image
    assert served.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    disposition = served.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="') and "\r" not in disposition and '"b' not in disposition


def test_svg_and_html_are_not_images():
    assert sniff_image(hostile.SVG_SAMPLE.encode()) is None and sniff_image(b"<?xml version='1.0'?><svg/>") is None
    assert sniff_image(b"GIF89a") == "GIF" and sniff_image(b"\xff\xd8\xff\xe0") == "JPEG"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("bomb", [hostile.png_claiming(20_000, 20_000), hostile.png_claiming(12_000, 12_000),
                                  hostile.png_claiming(8_000, 7_000), hostile.jpeg_claiming(60_000, 60_000),
                                  hostile.gif_claiming(65_535, 65_535), hostile.HTML_SAMPLE.encode(),
                                  b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"])
def test_bombs_and_non_images_are_refused_before_decoding(bomb):
    with pytest.raises(DatasetError):
        make_thumbnail(bomb, 128)


def test_a_big_jpeg_is_decoded_at_reduced_scale():
    big = _image("JPEG", (4000, 3000))  # 12 MP: over a 10 MP limit as stored, under it once drafted
    thumb = Image.open(io.BytesIO(make_thumbnail(big, 128, max_pixels=10_000_000)))
    assert max(thumb.size) == 128
    with pytest.raises(DatasetError, match="megapixels"):
        make_thumbnail(_image("PNG", (4000, 3000)), 128, max_pixels=10_000_000)  # PNG has no draft


async def test_thumbnailer_caches_limits_bytes_and_bounds_concurrency(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    for i in range(6):
        storage.write_bytes(f"img/{i}.png", _image("PNG", (60 + i, 40)))
    storage.write_bytes("img/huge.png", _image("PNG") + b"\x00" * 3000)
    running, most = 0, 0
    lock = threading.Lock()

    def slow_make(data: bytes, size: int, max_pixels: int) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # long enough for the requests to pile up on the pool
        with lock:
            running -= 1
        return make_thumbnail(data, size, max_pixels)

    thumbs = Thumbnailer(workers=2, make=slow_make, max_bytes=2000)
    results = await asyncio.gather(*(thumbs.thumbnail(storage, f"img/{i}.png", 64) for i in range(6)))
    assert all(Image.open(io.BytesIO(r)).format == "JPEG" for r in results)
    assert most == 2 and thumbs.made == 6  # never more than two decodes at once
    again = await thumbs.thumbnail(storage, "img/3.png", 64)
    assert again == results[3] and thumbs.made == 6  # served from the cache
    storage.write_bytes("img/3.png", _image("PNG", (99, 40)))
    assert await thumbs.thumbnail(storage, "img/3.png", 64) != results[3] and thumbs.made == 7  # new bytes, new thumb
    with pytest.raises(DatasetError, match="too large"):
        await thumbs.thumbnail(storage, "img/huge.png", 64)  # refused from stat: never read
    assert thumbs.made == 7


def test_sniffer_reads_each_version_once(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    storage.write_bytes("s/a.png", _image("PNG"))
    storage.write_bytes("s/b.png", hostile.HTML_SAMPLE.encode())
    sniffer = ImageSniffer()
    for _ in range(3):
        verdicts = {o.key: sniffer.format_of(storage, o) for o in storage.list("s/").objects}
    assert verdicts == {"s/a.png": "PNG", "s/b.png": None} and sniffer.reads == 2
