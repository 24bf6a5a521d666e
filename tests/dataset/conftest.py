"""Shared dataset fixtures: real photos from scikit-image (public domain, shipped in its wheel),
tiny caption models built once per session, and the real u2netp model for rembg."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.rembg_model import rembg_model  # noqa: F401  (session fixture)

# Where the astronaut's face is in skimage.data.astronaut() (512x512): measured once with dlib
# HOG and checked by eye; tests assert that crops contain it, never an exact box.
ASTRONAUT_FACE = (179, 83, 267, 171)


def astronaut(size: int = 512) -> Image.Image:
    from skimage import data

    img = Image.fromarray(data.astronaut())
    return img if size == 512 else img.resize((size, size), Image.Resampling.LANCZOS)


def face_at(size: int) -> tuple[float, float, float, float]:
    k = size / 512
    return tuple(v * k for v in ASTRONAUT_FACE)  # type: ignore[return-value]


def contains(outer, inner, slack: float = 0.0) -> bool:
    return (outer[0] <= inner[0] + slack and outer[1] <= inner[1] + slack
            and outer[2] >= inner[2] - slack and outer[3] >= inner[3] - slack)


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {
        "astronaut": astronaut(1024),
        "chelsea": Image.fromarray(data.chelsea()).resize((1353, 900), Image.Resampling.LANCZOS),
        "coffee": Image.fromarray(data.coffee()).resize((1200, 800), Image.Resampling.LANCZOS),
    }


@pytest.fixture
def hf_offline(monkeypatch):
    """Belt and braces: the code loads with local_files_only=True; this also stops the hub client."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_florence(tmp_path_factory) -> Path:
    from tests.dataset.tiny_models import build_florence

    return build_florence(tmp_path_factory.mktemp("tiny-florence"))


@pytest.fixture(scope="session")
def tiny_blip2(tmp_path_factory) -> Path:
    from tests.dataset.tiny_models import build_blip2

    return build_blip2(tmp_path_factory.mktemp("tiny-blip2"))


@pytest.fixture
def no_network_env(monkeypatch, tmp_path):
    """rembg must not find a model in the developer's home folders."""
    for var in ("U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path
