"""The images a session sends back: decoded for the Remote Generate node within bounds read from
their headers (:func:`decode_output_images`), or saved for the CLI under names of their own
(:func:`save_output`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ComfyUIError, ConfigError

# The formats of ComfyUI's image outputs (SaveImage and PreviewImage write PNG, SaveAnimatedWEBP
# WebP, a few packs JPEG): the only ones of the loader's allowlist the Remote Generate node decodes.
OUTPUT_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
# 6000x6000: above a 4x upscale of a Flux image, and still a ~430 MB tensor once decoded.
MAX_OUTPUT_PIXELS = 36_000_000
# every image of one prompt together, once decoded for the node (a float tensor of ~860 MB)
MAX_OUTPUT_BATCH_PIXELS = 2 * MAX_OUTPUT_PIXELS
MAX_SAME_NAME = 10_000


def decode_output_image(data: bytes, name: str) -> Any:
    """An image a remote ComfyUI sent, as an RGB Pillow image; :class:`ComfyUIError` for any other
    format (Pillow tries no other: an EPS would run Ghostscript) or more than
    :data:`MAX_OUTPUT_PIXELS` (read from the header, before a pixel is decoded). Blocking."""
    from ...dataset.load import decode_image
    from ...errors import ImageLoadError

    try:
        return decode_image(data, name=name, max_pixels=MAX_OUTPUT_PIXELS, formats=OUTPUT_IMAGE_FORMATS).image
    except ImageLoadError as exc:
        raise ComfyUIError(f"the remote ComfyUI sent an image this node does not read (only PNG, JPEG and "
                           f"WebP up to {MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels): {exc.message}") from None


def decode_output_images(images: list[tuple[str, bytes]]) -> list[Any]:
    """``(name, bytes)`` of a prompt's images, each decoded by :func:`decode_output_image`, after
    their pixels together were read from the headers and found within
    :data:`MAX_OUTPUT_BATCH_PIXELS` (a few KB of one-colour PNGs can claim gigabytes). Blocking."""
    import io
    import warnings

    from PIL import Image

    from ...dataset.load import pillow_openers

    total = 0
    for name, data in images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=pillow_openers(OUTPUT_IMAGE_FORMATS)) as im:
                    total += im.width * im.height
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # not one of the formats: decode_output_image below says so, naming it
    if total > MAX_OUTPUT_BATCH_PIXELS:
        raise ComfyUIError(f"the remote ComfyUI sent {len(images)} images of {total / 1e6:.0f} megapixels together, "
                           f"more than the {MAX_OUTPUT_BATCH_PIXELS / 1e6:.0f} this node decodes at once")
    return [decode_output_image(data, name) for name, data in images]


def save_output(dest: Path, filename: str, data: bytes) -> Path:
    """Write one output image into ``dest`` and return its path, never over another file: a second
    image of the same name (two save nodes with one prefix in different subfolders, a remote that
    restarted its counter, an earlier run's file) becomes ``name-2.png``, ``name-3.png``... The
    name is the remote's file name alone (the client refused separators and ``..``), never a
    hidden file. Blocking."""
    base = Path(filename).name.lstrip(".") or "image"
    stem, suffix = (base.rsplit(".", 1)[0], "." + base.rsplit(".", 1)[1]) if "." in base else (base, "")
    dest.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_SAME_NAME + 1):
        path = dest / (base if n == 1 else f"{stem}-{n}{suffix}")
        try:
            with open(path, "xb") as f:  # x: an existing file is never replaced, even by a racing writer
                f.write(data)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"{dest} already holds {MAX_SAME_NAME} images named like {base}: choose another --out folder")
