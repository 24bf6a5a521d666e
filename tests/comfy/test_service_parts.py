"""The service's small pure parts: safetensors headers, file names, pro-rata costs, thumbnails,
and the per-install token file."""

from __future__ import annotations

import io
import os
import stat
import struct

import pytest
from PIL import Image

from comfy_lora_cloud.comfy.token import TOKEN_FILE, load_or_create_token, token_matches
from comfy_lora_cloud.errors import ConfigError, DatasetError
from comfy_lora_cloud.service.library.files import check_file_name, parse_safetensors_header
from comfy_lora_cloud.service.library.media import make_thumbnail

from tests.comfy.conftest import safetensors_bytes


def test_safetensors_header_reads_kohya_metadata():
    parsed = parse_safetensors_header(safetensors_bytes({"ss_network_dim": "32", "ss_network_alpha": "16"}))
    assert parsed == {"metadata": {"ss_network_dim": "32", "ss_network_alpha": "16"}, "tensors": 1}


@pytest.mark.parametrize("data", [
    b"",
    b"\x01\x02",
    struct.pack("<Q", 0),
    struct.pack("<Q", 10**12) + b"{}",
    struct.pack("<Q", 50) + b"{}",  # claims more header than there is
    struct.pack("<Q", 3) + b"abc",
    struct.pack("<Q", 2) + b"[]",
])
def test_safetensors_header_rejects_junk(data):
    with pytest.raises(DatasetError):
        parse_safetensors_header(data)


@pytest.mark.parametrize("name", ["001.png", "IMG (1).JPG", "a.b.c.webp", "été.png"])
def test_file_names_that_are_fine(name):
    assert check_file_name(name) == name


@pytest.mark.parametrize("name", ["", "../x.png", "a/b.png", "a\\b.png", ".hidden.png", "..", "a\x00.png",
                                  "x" * 256])
def test_file_names_that_are_refused(name):
    with pytest.raises(ConfigError):
        check_file_name(name)


def test_thumbnail_of_a_transparent_png_is_a_small_jpeg():
    src = io.BytesIO()
    Image.new("RGBA", (600, 300), (255, 0, 0, 0)).save(src, "PNG")
    thumb = Image.open(io.BytesIO(make_thumbnail(src.getvalue(), 128)))
    assert thumb.format == "JPEG" and thumb.size == (128, 64)
    assert thumb.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)  # transparent -> white
    with pytest.raises(DatasetError):
        make_thumbnail(b"not an image", 64)


def test_token_file_is_private_stable_and_repaired(tmp_path):
    token = load_or_create_token(tmp_path)
    assert load_or_create_token(tmp_path) == token
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_text("short")
    fresh = load_or_create_token(tmp_path)
    assert fresh != token and len(fresh) >= 32 and path.read_text() == fresh
    assert [p.name for p in tmp_path.iterdir()] == [TOKEN_FILE]  # no temporary files left
    assert token_matches(fresh, fresh) and not token_matches(fresh, None) and not token_matches(fresh, fresh[:-1])

