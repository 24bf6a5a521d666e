"""A folder of bad inputs, generated: one of each kind the loader must refuse, each file named
for what is wrong with it, plus good files with odd names."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

from PIL import Image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (valid CRC) with a token of pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


# file name -> a phrase the per-file error must contain
BAD_FILES = {
    "zero-bytes.jpg": "empty",
    "truncated.jpg": "truncated",
    "text-file.jpg": "not an image",
    "png-named.jpg": "PNG file with a .jpg name",
    "document.pdf": "not a supported image type",
    "bomb-20000x20000.png": "decompression bomb",
    "tiny-1x1.png": "too small",
    "link-outside.jpg": "outside the dataset folder",
}


def make_bad_corpus(folder: Path, good: Image.Image, outside: Path) -> dict[str, str]:
    """Write the bad files into ``folder``; return BAD_FILES. ``outside`` gets the symlink target."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero-bytes.jpg").write_bytes(b"")
    data = jpeg_bytes(good)
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text-file.jpg").write_text("these are not the pixels you are looking for\n")
    buf = io.BytesIO()
    good.resize((64, 64)).save(buf, "PNG")
    (folder / "png-named.jpg").write_bytes(buf.getvalue())
    (folder / "document.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    (folder / "bomb-20000x20000.png").write_bytes(png_header_only(20000, 20000))
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "tiny-1x1.png")
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(data)
    os.symlink(outside, folder / "link-outside.jpg")
    return dict(BAD_FILES)
