"""Files from the bucket as a browser gets them. Bucket content is untrusted input: the rented
host holds a key that can write any object, so a "sample" may be HTML or SVG with script in it.

- :func:`served_file`: what a route answers for a file from the bucket. Only the allowlisted
  raster types (:data:`IMAGE_TYPES`), recognised by their first bytes and never by the file
  name, get an image content type. Anything else goes out as ``application/octet-stream`` with
  ``Content-Disposition: attachment``. Every such answer carries ``X-Content-Type-Options:
  nosniff`` and ``Content-Security-Policy: default-src 'none'; sandbox``, so even a browser that
  renders it runs no script in ComfyUI's origin.
- :class:`Thumbnailer`: thumbnails with a byte limit (checked with ``stat`` before reading), a
  pixel limit (checked from the header before decoding; JPEGs decode at a reduced scale first),
  Pillow's decoders restricted to the allowlisted formats (no EPS, which calls Ghostscript),
  decoding on a small thread pool of its own (bounded CPU and memory, never the event loop) and an
  in-memory cache keyed by the object's checksum.

A 12000x12000 PNG of 0.45 MB made the old thumbnail route spend 3.3 s and 1.17 GB per request;
with these limits it is refused from its header (``benchmarks/thumbnail_bomb.py`` measures both).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import io
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import DatasetError
from ...storage import ObjectInfo, Storage

# first bytes -> content type; raster formats only (no SVG, no HTML, nothing that can hold script)
IMAGE_TYPES: dict[str, str] = {
    "PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp",
    "BMP": "image/bmp", "TIFF": "image/tiff",
}
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # larger files are not served or thumbnailed from the sidebar
MAX_THUMB_PIXELS = 50_000_000  # after JPEG draft scaling; a 45 MP camera photo still passes
THUMB_WORKERS = 2
THUMB_CACHE_BYTES = 32 * 1024 * 1024


def sniff_image(data: bytes) -> str | None:
    """The Pillow format name of an allowlisted image, from its first bytes; None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def attachment(name: str) -> str:
    """A ``Content-Disposition: attachment`` value whose file name cannot break the header."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100].strip(".") or "file"
    return f'attachment; filename="{safe}"'


@dataclass(frozen=True)
class ServedFile:
    """A file from the bucket, with the headers that make serving it safe."""

    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


def served_file(data: bytes, name: str) -> ServedFile:
    """How to answer with ``data``: an image type only when its bytes are an allowlisted image."""
    fmt = sniff_image(data)
    headers = dict(SAFE_HEADERS)
    if fmt is None:
        headers["Content-Disposition"] = attachment(name)
        return ServedFile(data, "application/octet-stream", headers)
    return ServedFile(data, IMAGE_TYPES[fmt], headers)


def read_media(storage: Storage, key: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The object's bytes, refused from ``stat`` when it is over ``max_bytes`` (blocking)."""
    info = storage.stat(key)
    if info.size > max_bytes:
        raise DatasetError(f"{key.rsplit('/', 1)[-1]} is {info.size / 1e6:.0f} MB, more than the "
                           f"{max_bytes / 1e6:.0f} MB the sidebar shows; download it with the CLI instead")
    return storage.read_bytes(key)


def make_thumbnail(data: bytes, size: int, max_pixels: int = MAX_THUMB_PIXELS) -> bytes:
    """A small JPEG of an allowlisted image (EXIF orientation applied), or :class:`DatasetError`.

    The pixel limit is checked from the header, before any pixel is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if sniff_image(data) is None:
        raise DatasetError("cannot read image: not a PNG, JPEG, GIF, WebP, BMP or TIFF file")
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES)) as im:
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # decode at 1/2..1/8 scale: far fewer pixels
            width, height = im.size
            if width * height > max_pixels:
                raise DatasetError(f"image is {width}x{height} pixels, more than the {max_pixels / 1e6:.0f} "
                                   "megapixels a thumbnail is made from")
            im = ImageOps.exif_transpose(im)
            im.thumbnail((size, size))
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGBA")
                bg = Image.new("RGB", im.size, (255, 255, 255))
                bg.paste(im, mask=im.getchannel("A"))
                im = bg
            out = io.BytesIO()
            im.save(out, "JPEG", quality=82)
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"image is too large to preview: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DatasetError(f"cannot read image: {exc}") from None
    return out.getvalue()


class ImageSniffer:
    """Which bucket objects are allowlisted images, judged by their bytes; one verdict per object
    version (checksum or generation), so a sample list that a poller asks for every few seconds
    reads each new sample once. The Storage protocol has no ranged read, so the whole object is
    read (samples are a few MB at most; bigger ones are not images to us)."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = MAX_IMAGE_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._verdicts: collections.OrderedDict[tuple[Any, ...], str | None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0

    def format_of(self, storage: Storage, obj: ObjectInfo) -> str | None:
        """The allowlisted format of ``obj`` (blocking: call it in a thread), or None."""
        version = obj.md5 or obj.generation or (obj.size, obj.updated)
        key = (storage.url, obj.key, version)
        with self._lock:
            if key in self._verdicts:
                self._verdicts.move_to_end(key)
                return self._verdicts[key]
        verdict = None
        if 8 <= obj.size <= self.max_bytes:
            self.reads += 1
            verdict = sniff_image(storage.read_bytes(obj.key)[:16])
        with self._lock:
            self._verdicts[key] = verdict
            while len(self._verdicts) > self.max_entries:
                self._verdicts.popitem(last=False)
        return verdict


class Thumbnailer:
    """Thumbnails of bucket images: bounded work, off the event loop, cached.

    Reading runs in the default thread pool (network-bound); decoding, the expensive part, on
    this object's own pool of ``workers`` threads, so at most that many images are ever decoded
    at once whatever the number of requests. Holds no loop-bound object: the pool and the lock
    are thread-level, so every event loop that shares the service may call it.
    """

    def __init__(self, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_THUMB_PIXELS,
                 workers: int = THUMB_WORKERS, cache_bytes: int = THUMB_CACHE_BYTES,
                 make: Callable[[bytes, int, int], bytes] = make_thumbnail):
        self.max_bytes, self.max_pixels, self.cache_bytes, self.make = max_bytes, max_pixels, cache_bytes, make
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="lora-cloud-thumb")
        self._cache: collections.OrderedDict[tuple[Any, ...], bytes] = collections.OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.made = 0  # thumbnails decoded (not served from the cache): tests and benchmarks read it

    async def thumbnail(self, storage: Storage, key: str, size: int) -> bytes:
        info = await asyncio.to_thread(storage.stat, key)
        if info.size > self.max_bytes:
            raise DatasetError(f"{key.rsplit('/', 1)[-1]} is {info.size / 1e6:.0f} MB, too large to preview")
        cache_key = (storage.url, key, info.md5 or info.generation or info.updated, info.size, size)
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit is not None:
                self._cache.move_to_end(cache_key)
                return hit
        data = await asyncio.to_thread(storage.read_bytes, key)
        loop = asyncio.get_running_loop()
        thumb = await loop.run_in_executor(self._pool, self.make, data, size, self.max_pixels)
        self._remember(cache_key, thumb)
        return thumb

    def _remember(self, key: tuple[Any, ...], thumb: bytes) -> None:
        with self._lock:
            self.made += 1
            if key in self._cache:
                return
            self._cache[key] = thumb
            self._cached_bytes += len(thumb)
            while self._cached_bytes > self.cache_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= len(old)
