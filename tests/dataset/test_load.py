"""Loading: formats, EXIF orientation, modes, first frames; and every kind of bad file gives a
clear per-file ImageLoadError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from comfy_lora_cloud.dataset.load import decode_image, load_image, to_rgb
from comfy_lora_cloud.errors import ImageLoadError
from tests.dataset.conftest import astronaut
from tests.dataset.corpus import BAD_FILES, make_bad_corpus


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("TIFF", ".tif"), ("BMP", ".bmp")])
def test_common_formats_load_as_rgb(tmp_path, fmt, ext):
    src = astronaut(128)
    path = tmp_path / f"a{ext}"
    path.write_bytes(_encode(src, fmt))
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (128, 128)
    assert loaded.source_format == fmt
    # same picture, not just some RGB image: mean colour within JPEG/WebP loss
    assert np.abs(np.asarray(loaded.image, float).mean(axis=(0, 1)) - np.asarray(src, float).mean(axis=(0, 1))).max() < 4


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 100, 100))  # blue on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.image.size == (100, 200)
    arr = np.asarray(loaded.image)
    assert arr[10, 50, 2] > 200 and arr[190, 50, 0] > 200  # blue now on top, red at the bottom


def test_modes_become_rgb():
    # CMYK
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    out = decode_image(_encode(cmyk, "JPEG"), name="c.jpg", ext=".jpg").image
    assert out.mode == "RGB" and out.getpixel((4, 4))[0] > 200 and out.getpixel((4, 4))[1] < 60
    # 16-bit greyscale PNG: scaled, not clipped (half of 65535 is mid-grey, not white)
    arr16 = np.full((8, 8), 32768, dtype=np.uint16)
    out = decode_image(_encode(Image.fromarray(arr16), "PNG"), name="g.png", ext=".png").image
    assert out.mode == "RGB" and 120 <= out.getpixel((0, 0))[0] <= 135
    # palette with a transparent index: transparent -> white background
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    pal.putpixel((0, 0), 1)
    out = decode_image(_encode(pal, "PNG", transparency=0), name="p.png", ext=".png").image
    assert out.getpixel((0, 0)) == (10, 200, 10) and out.getpixel((3, 3)) == (255, 255, 255)
    # RGBA and LA: alpha composited on white
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(_encode(rgba, "PNG"), name="r.png", ext=".png").image.getpixel((1, 1)) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 255))
    assert decode_image(_encode(la, "PNG"), name="l.png", ext=".png").image.getpixel((1, 1)) == (0, 0, 0)
    # greyscale
    assert to_rgb(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    loaded = decode_image(buf.getvalue(), name="anim.gif", ext=".gif")
    r, g, b = loaded.image.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50
    assert any("first frame" in w for w in loaded.warnings)


def test_every_bad_file_gives_a_clear_error_and_the_source_is_untouched(tmp_path):
    folder = tmp_path / "src"
    expected = make_bad_corpus(folder, astronaut(256), tmp_path / "elsewhere" / "secret.jpg")
    before = {p.name: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in folder.iterdir()}
    for name, phrase in expected.items():
        if name == "tiny-1x1.png":
            assert load_image(folder / name, root=folder).image.size == (1, 1)  # loads; the bucket step refuses it
            continue
        with pytest.raises(ImageLoadError) as err:
            load_image(folder / name, root=folder)
        assert phrase in err.value.message, (name, err.value.message)
        assert name in err.value.message and err.value.path.endswith(name)
    assert {p.name: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in folder.iterdir()} == before
    assert set(BAD_FILES) == set(before)


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "a.png"
    astronaut(256).save(path)
    with pytest.raises(ImageLoadError, match="megapixels"):
        load_image(path, max_pixels=256 * 255)
    assert load_image(path, max_pixels=256 * 256).image.size == (256, 256)
