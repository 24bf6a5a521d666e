"""Perceptual hashes: near-duplicates found, different photos kept apart."""

from __future__ import annotations

from PIL import Image, ImageEnhance, ImageOps

from comfy_lora_cloud.dataset.dedupe import ImageHash, distance, find_duplicates, image_hash
from tests.dataset.conftest import astronaut


def test_near_duplicates_are_grouped(photos):
    a = astronaut(512)
    resized_brighter = ImageEnhance.Brightness(a.resize((300, 300))).enhance(1.1)
    recompressed = a.convert("RGB").resize((511, 511))
    hashes = [("a.jpg", image_hash(a)), ("cat.jpg", image_hash(photos["chelsea"])),
              ("b.jpg", image_hash(resized_brighter)), ("coffee.jpg", image_hash(photos["coffee"])),
              ("c.jpg", image_hash(recompressed)), ("mirror.jpg", image_hash(ImageOps.mirror(a)))]
    assert find_duplicates(hashes) == [["a.jpg", "b.jpg", "c.jpg"]]


def test_distance_and_hex_round_trip(photos):
    h = image_hash(photos["coffee"])
    assert ImageHash.from_hex(h.to_hex()) == h
    assert distance(h, h) == 0
    assert distance(h, image_hash(photos["chelsea"])) > 20
    flat = image_hash(Image.new("RGB", (64, 64), (9, 9, 9)))
    assert distance(flat, flat) == 0
