"""Captions: the real Florence-2 and BLIP-2 code paths (processor, generate, decode, Florence's
post-processing) on tiny locally built checkpoints; trigger placement per LoRA type."""

from __future__ import annotations

import pytest
from PIL import Image

from comfy_lora_cloud.dataset.caption import Captioner, caption_all, clean_caption, existing_caption, place_trigger
from comfy_lora_cloud.errors import DatasetError
from tests.dataset.conftest import astronaut


def _images():
    return [astronaut(96), Image.new("RGB", (80, 50), (10, 120, 30)), astronaut(64).convert("L"),
            Image.new("RGBA", (40, 70), (200, 0, 0, 128)), astronaut(128), astronaut(72)]


@pytest.mark.parametrize("backend,fixture", [("florence", "tiny_florence"), ("blip2", "tiny_blip2")])
def test_tiny_models_caption_batches_in_order_and_load_once(backend, fixture, request, hf_offline):
    path = request.getfixturevalue(fixture)
    cap = Captioner(backend, str(path), device="auto", batch_size=4, max_new_tokens=8, num_beams=2)
    assert cap.loads == 0  # lazy
    images = _images()
    first = cap.caption(images)
    assert len(first) == len(images) and all(isinstance(c, str) for c in first)
    assert all("<" not in c and "</s>" not in c for c in first)  # special tokens stripped
    second = cap.caption(images[:2])
    assert cap.loads == 1  # loaded once, reused
    assert second == first[:2]  # greedy/beam search is deterministic; batching does not change results


def test_caption_all_keeps_existing_captions_unless_overwrite(tiny_florence):
    cap = Captioner("florence", str(tiny_florence), max_new_tokens=4, num_beams=1)
    images = _images()[:3]
    existing = ["my own words", None, ""]
    out = caption_all(cap, images, existing, trigger="ohwx", lora_type="character")
    assert out[0] == ("ohwx, my own words", "existing")  # kept as written; the missing trigger goes in front
    kept = caption_all(cap, images, ["photo of OHWX smiling", None, ""], trigger="ohwx", lora_type="character")
    assert kept[0] == ("photo of OHWX smiling", "existing")
    assert [o for _, o in out[1:]] == ["model", "model"] and all(c.startswith("ohwx") for c, _ in out[1:])
    out = caption_all(cap, images, existing, trigger="ohwx", lora_type="character", overwrite=True)
    assert [o for _, o in out] == ["model"] * 3
    # no model: the trigger alone, or nothing
    assert caption_all(None, images, existing, trigger="ohwx", lora_type="style")[1] == ("ohwx", "trigger")
    assert caption_all(None, images, existing, trigger=None, lora_type="style")[2] == ("", "none")


def test_missing_model_is_a_clear_error(tmp_path, hf_offline):
    with pytest.raises(DatasetError, match="does not exist"):
        Captioner("florence", str(tmp_path / "nope")).caption([astronaut(64)])
    # the default hub id, with no local copy and no network: say how to get it
    with pytest.raises(DatasetError, match="--caption-model"):
        Captioner("blip2", None).caption([astronaut(64)])
    with pytest.raises(DatasetError, match="unknown caption backend"):
        Captioner("llava")  # type: ignore[arg-type]
    # a folder with a config but no processor, tokenizer or weights: a message, not a ValueError
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(DatasetError, match="not a complete florence model"):
        Captioner("florence", str(tmp_path / "half")).caption([astronaut(64)])


def test_trigger_placement_per_type():
    raw = "The image shows a young woman with long hair wearing a red dress in a park. She is smiling at her dog."
    cap = place_trigger(raw, "ohwx", "character")
    assert cap.startswith("ohwx") and "woman" not in cap and " she " not in f" {cap.lower()} "
    assert "red dress" in cap and "park" in cap and "the image shows" not in cap.lower()
    style = place_trigger("A watercolor painting of a harbour with boats at sunset.", "mystyle", "style")
    assert style == "mystyle, a harbour with boats at sunset"
    concept = place_trigger("The image shows a red teapot on a table.", "tpot", "concept")
    assert concept == "tpot, a red teapot on a table"
    assert place_trigger("NASA astronaut in a suit", None, "character") == "NASA astronaut in a suit"
    assert place_trigger("", "ohwx", "character") == "ohwx"


def test_clean_caption_and_existing_caption(tmp_path):
    assert clean_caption("</s><s>The image shows  a cat<loc_3>.</s>") == "a cat"
    (tmp_path / "a.txt").write_text("  hello \n")
    (tmp_path / "b.txt").write_text("   \n")
    assert existing_caption(tmp_path / "a.jpg") == "hello"
    assert existing_caption(tmp_path / "b.png") is None
    assert existing_caption(tmp_path / "c.png") is None
