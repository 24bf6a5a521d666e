"""Load one image file into an RGB Pillow image, or fail with an :class:`ImageLoadError` for that
file alone.

Why so careful: a training folder is whatever a user dragged out of a phone or a browser. Any one
bad file (zero bytes, cut off mid-download, a PDF named ``.jpg``, a decompression bomb) must be
reported clearly and never stop the other files. The source is opened read-only and never written.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError
from ..storage.layout import IMAGE_SUFFIXES

# The Pillow formats each accepted extension (storage.layout.IMAGE_SUFFIXES) must really contain.
FORMATS_BY_EXT: dict[str, set[str]] = {
    ".jpg": {"JPEG", "MPO"},
    ".jpeg": {"JPEG", "MPO"},
    ".jpe": {"JPEG", "MPO"},
    ".png": {"PNG"},
    ".webp": {"WEBP"},
    ".bmp": {"BMP"},
    ".gif": {"GIF"},
    ".tif": {"TIFF"},
    ".tiff": {"TIFF"},
}
IMAGE_EXTENSIONS = IMAGE_SUFFIXES
# Every format Pillow may open for us: raster decoders only. Passed as ``formats=`` so Pillow never
# even tries the others (EPS runs Ghostscript, a PostScript interpreter).
DECODABLE_FORMATS = frozenset().union(*FORMATS_BY_EXT.values())


def pillow_openers(formats: frozenset[str] = DECODABLE_FORMATS) -> list[str]:
    """``formats`` (a subset of :data:`DECODABLE_FORMATS`) as Pillow's ``formats=``: the openers
    to try. An MPO file (a camera's multi-picture JPEG) is opened by the JPEG opener."""
    return sorted({"JPEG" if f == "MPO" else f for f in formats & DECODABLE_FORMATS})
# Files that sit next to images and are not images: captions and our own manifest.
SIDECAR_EXTENSIONS = frozenset({".txt", ".caption", ".json"})

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: far above any training use, far below a bomb
MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass
class LoadedImage:
    """An RGB image plus what was done to it on the way in."""

    image: Image.Image
    source_format: str
    original_size: tuple[int, int]  # (width, height) after EXIF orientation
    warnings: list[str] = field(default_factory=list)


def load_image(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> LoadedImage:
    """Read ``path`` and return it as RGB with EXIF orientation applied.

    ``root``: when given, a path (or symlink) that resolves outside it is refused, so a link in
    the user's folder cannot pull in arbitrary files. Transparent pixels are composited onto
    ``background``; animated files give their first frame.
    """
    p = Path(path)
    name = p.name
    if root is not None:
        real_root = os.path.realpath(root)
        real = os.path.realpath(p)
        if os.path.commonpath([real_root, real]) != real_root:
            raise ImageLoadError(f"{name}: is a link to a file outside the dataset folder; skipped", path=str(p))
    ext = p.suffix.lower()
    if ext not in FORMATS_BY_EXT:
        raise ImageLoadError(
            f"{name}: not a supported image type ({ext or 'no extension'}); "
            f"use one of {', '.join(sorted(IMAGE_EXTENSIONS))}",
            path=str(p),
        )
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot be read ({exc.strerror or exc})", path=str(p)) from None
    if size == 0:
        raise ImageLoadError(f"{name}: is empty (0 bytes)", path=str(p))
    if size > MAX_FILE_BYTES:
        raise ImageLoadError(f"{name}: is too large ({size // (1024 * 1024)} MiB)", path=str(p))
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot be read ({exc.strerror or exc})", path=str(p)) from None
    return decode_image(data, name=name, ext=ext, max_pixels=max_pixels, background=background, path=str(p))


def decode_image(
    data: bytes,
    *,
    name: str,
    ext: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    path: str = "",
    formats: frozenset[str] = DECODABLE_FORMATS,
) -> LoadedImage:
    """Decode image bytes (see :func:`load_image`); ``ext`` checks the content against the name,
    ``formats`` (a subset of :data:`DECODABLE_FORMATS`) are the only ones Pillow tries. The pixel
    limit is checked from the header, before any pixel is decoded."""
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between MAX_IMAGE_PIXELS and twice that; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=pillow_openers(formats))
    except UnidentifiedImageError:
        kind = "not an image" if ext is None else f"not an image (its content is not {ext})"
        raise ImageLoadError(f"{name}: {kind}", path=path) from None
    except Image.DecompressionBombError:
        raise ImageLoadError(
            f"{name}: refused as a possible decompression bomb (its header claims over "
            f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)", path=path
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"{name}: cannot be decoded ({exc})", path=path) from None

    fmt = img.format or "unknown"
    if ext is not None and fmt not in FORMATS_BY_EXT.get(ext, set()):
        raise ImageLoadError(
            f"{name}: is a {fmt} file with a {ext} name; rename it to the right extension", path=path
        )
    w, h = img.size
    if w * h > max_pixels:
        raise ImageLoadError(
            f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the {max_pixels / 1e6:.0f} MP limit "
            "(a possible decompression bomb); downscale it first",
            path=path,
        )
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
        notes.append(f"{name}: animated ({img.n_frames} frames); used the first frame")
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(f"{name}: is damaged or truncated ({exc})", path=path) from None
    rgb = to_rgb(img, background)
    return LoadedImage(rgb, fmt, rgb.size, notes)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: high bit depths scaled (not clipped), alpha flattened."""
    import numpy as np

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        if mode == "F":
            full_scale = 1.0 if peak <= 1.0 else peak
        else:  # 16-bit PNG/TIFF data: 0..65535 (or 0..255 stored wide)
            full_scale = 65535.0 if peak > 255 else 255.0
        grey = np.clip(arr / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("P", "LA", "PA", "RGBa") and (mode != "P" or "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        base = Image.new("RGB", img.size, background)
        base.paste(img, mask=img.getchannel("A"))
        return base
    return img.convert("RGB")  # L, 1, P without transparency, CMYK, YCbCr, LAB, HSV


def check_image_file(
    path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> str | None:
    """Why ``path`` cannot be trained on (empty, not an image, the wrong type for its name,
    truncated, absurd dimensions), or None when it decodes whole.

    The same rules as :func:`load_image`, made cheaper for checking a whole folder before an
    upload: a JPEG is decoded at 1/8 scale (every byte is still read, so a cut-off file is
    caught) and nothing is converted.
    """
    p = Path(path)
    name = p.name
    try:
        if root is not None:
            real_root, real = os.path.realpath(root), os.path.realpath(p)
            if os.path.commonpath([real_root, real]) != real_root:
                return f"{name}: is a link to a file outside the folder"
        ext = p.suffix.lower()
        if ext not in FORMATS_BY_EXT:
            return f"{name}: not a supported image type ({ext or 'no extension'})"
        size = p.stat().st_size
        if size == 0:
            return f"{name}: is empty (0 bytes)"
        if size > MAX_FILE_BYTES:
            return f"{name}: is too large ({size // (1024 * 1024)} MiB)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p, formats=pillow_openers()) as img:
                fmt = img.format or "unknown"
                if fmt not in FORMATS_BY_EXT[ext]:
                    return f"{name}: is a {fmt} file with a {ext} name; rename it to the right extension"
                w, h = img.size
                if w < 1 or h < 1 or w * h > max_pixels:
                    return (f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the {max_pixels / 1e6:.0f} MP "
                            "limit (absurd dimensions or a decompression bomb); downscale it first")
                if fmt in ("JPEG", "MPO"):
                    img.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                img.load()
    except UnidentifiedImageError:
        return f"{name}: not an image (its content is not {p.suffix.lower()})"
    except Image.DecompressionBombError:
        return (f"{name}: refused as a possible decompression bomb (its header claims over "
                f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)")
    except OSError as exc:
        if exc.filename is not None or isinstance(exc, PermissionError):
            return f"{name}: cannot be read ({exc.strerror or exc})"
        return f"{name}: is damaged or truncated ({exc})"
    except (ValueError, SyntaxError, EOFError) as exc:
        return f"{name}: is damaged or truncated ({exc})"
    return None


def check_image_files(folder: str | os.PathLike[str], rels: list[str], *, workers: int = 4) -> list[dict[str, str]]:
    """``{"file", "reason"}`` for each image under ``folder`` that :func:`check_image_file`
    refuses, in the order given. Decoding runs on a few threads (Pillow releases the GIL), no
    more than there are cores: a full-size PNG decodes into hundreds of MB."""
    import concurrent.futures

    root = Path(folder)
    threads = max(1, min(workers, os.cpu_count() or 2, len(rels) or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = list(pool.map(lambda rel: check_image_file(root / rel, root=root), rels))
    # the reason names the file by its path in the folder, not only its name
    return [{"file": rel, "reason": rel + why[len(Path(rel).name):]} for rel, why in zip(rels, reasons)
            if why is not None]
