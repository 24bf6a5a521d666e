"""Crops on real photos: the astronaut's face (scikit-image, public domain), a cat with no human
face, a subject on a plain background."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from comfy_lora_cloud.dataset.bucket import BucketConfig, plan_bucket
from comfy_lora_cloud.dataset.crop import (
    choose_face, crop_for, detect_faces, face_crop, head_and_shoulders, mask_box, object_crop,
)
from tests.dataset.conftest import astronaut, contains, face_at


@pytest.mark.parametrize("size", [512, 2048])
def test_face_crop_contains_the_face_and_the_shoulders(size):
    img = astronaut(size)
    result = face_crop(img, name="astro.jpg")
    assert result.method == "face" and not result.warnings
    face = face_at(size)
    assert contains(result.box, face)
    # head and shoulders: well below the chin, not the whole picture
    assert result.box[3] >= face[3] + 1.0 * (face[3] - face[1])
    assert (result.box[2] - result.box[0]) < 0.9 * size
    # and the final training crop still holds the face
    plan = plan_bucket(img.size, BucketConfig(), result.box)
    assert contains(plan.box, face)


def test_detection_on_a_downscaled_copy_maps_back_to_full_size():
    img = astronaut(2048)
    small = detect_faces(img, detect_size=512)
    assert small, "the face must be found on the 512 px copy"
    box = small[0][0]
    face = face_at(2048)
    # the mapped-back box overlaps the true face region by most of its area
    ix = max(0, min(box[2], face[2]) - max(box[0], face[0]))
    iy = max(0, min(box[3], face[3]) - max(box[1], face[1]))
    assert ix * iy > 0.6 * (face[2] - face[0]) * (face[3] - face[1])


def test_several_faces_use_the_largest_and_say_so():
    big, small = astronaut(600), astronaut(500)
    canvas = Image.new("RGB", (1100, 600), (128, 128, 128))
    canvas.paste(small, (0, 100))
    canvas.paste(big, (500, 0))
    # detect at full size here: HOG's 80 px window would miss the smaller face on an 800 px copy
    result = face_crop(canvas, name="two.jpg", detect_size=1100)
    assert result.method == "face"
    assert len(result.faces) >= 2 and any("faces found; used the largest" in w for w in result.warnings)
    big_face = tuple(v * 600 / 512 for v in (179, 83, 267, 171))
    big_face = (big_face[0] + 500, big_face[1], big_face[2] + 500, big_face[3])
    assert contains(result.box, big_face)


def test_choose_face_rule():
    faces = [((0, 0, 100, 100), 1.2), ((200, 0, 300, 100), 0.1), ((400, 0, 450, 50), 0.9)]
    chosen, kept = choose_face(faces)
    assert chosen == faces[0]  # largest among those scoring >= half the best
    assert faces[1] not in kept  # the 0.1 detection is dropped as a likely false positive
    # a bigger but weak detection does not win
    chosen, _ = choose_face([((0, 0, 50, 50), 1.0), ((0, 0, 500, 500), 0.2)])
    assert chosen[0] == (0, 0, 50, 50)
    assert choose_face([]) == (None, [])


def test_no_face_falls_back_to_the_centre_with_a_warning(photos):
    result = face_crop(photos["coffee"], name="coffee.jpg")
    assert result.method == "fallback-center"
    assert result.warnings == ["coffee.jpg: no face found; used the centre crop"]
    w, h = photos["coffee"].size
    assert result.box == ((w - h) / 2, 0, (w + h) / 2, h)


def test_head_and_shoulders_is_clamped_to_the_image():
    box = head_and_shoulders((10, 10, 110, 110), (300, 400))
    assert box[0] == 0 and box[1] == 0 and box[2] == 210 and box[3] == 280


def _subject_on_plain_background() -> tuple[Image.Image, tuple[int, int, int, int]]:
    rng = np.random.default_rng(1)
    arr = np.full((600, 900, 3), 200, np.uint8) + rng.integers(0, 4, (600, 900, 3), dtype=np.uint8)
    subject = (560, 150, 800, 420)
    yy, xx = np.mgrid[subject[1]:subject[3], subject[0]:subject[2]]
    arr[subject[1]:subject[3], subject[0]:subject[2]] = np.stack(
        [(xx * 7) % 255, (yy * 5) % 255, ((xx + yy) * 3) % 255], -1).astype(np.uint8)
    return Image.fromarray(arr), subject


def test_object_crop_from_saliency_finds_the_subject():
    img, subject = _subject_on_plain_background()
    result = object_crop(img, name="obj.png")
    assert result.method == "saliency"
    assert contains(result.box, subject, slack=25)
    assert (result.box[2] - result.box[0]) < 0.6 * img.size[0]  # not the whole picture


def test_object_crop_from_a_mask_is_the_mask_box_padded():
    mask = np.zeros((100, 200), np.uint8)
    mask[20:60, 50:150] = 255
    assert mask_box(mask) == (50.0, 20.0, 150.0, 60.0)
    result = object_crop(Image.new("RGB", (200, 100)), mask=mask)
    assert result.method == "mask" and result.box == (40.0, 16.0, 160.0, 64.0)
    assert mask_box(np.zeros((5, 5))) is None


def test_crop_modes_for_style():
    img = Image.new("RGB", (300, 200))
    assert crop_for("none", img).box == (0, 0, 300, 200)
    assert crop_for("center", img).box == (50, 0, 250, 200)
    with pytest.raises(ValueError):
        crop_for("sideways", img)  # type: ignore[arg-type]
