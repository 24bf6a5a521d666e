"""Buckets: our sizes must be ones kohya trains on without cropping again.

``kohya_select`` restates kohya sd-scripts' ``BucketManager.select_bucket`` (both modes) from its
documented rules, so the tests check our output against what the
trainer will do with it, not against our own code.
"""

from __future__ import annotations

import math

import pytest

from comfy_lora_cloud.dataset.bucket import BucketConfig, bucket_resolutions, fit_box_to_aspect, nearest_bucket, plan_bucket


def kohya_select(w: int, h: int, cfg: BucketConfig, no_upscale: bool):
    """(bucket, resized size) as kohya computes them; kohya then centre-crops resized -> bucket."""
    aspect = w / h
    if not no_upscale:
        resos = bucket_resolutions(cfg)
        reso = (w, h) if (w, h) in resos else min(resos, key=lambda r: abs(r[0] / r[1] - aspect))
        scale = reso[1] / h if aspect > reso[0] / reso[1] else reso[0] / w
        return reso, (int(w * scale + 0.5), int(h * scale + 0.5))
    max_area = cfg.resolution * cfg.resolution
    assert w * h <= max_area  # our outputs never exceed the area
    return (w - w % cfg.steps, h - h % cfg.steps), (w, h)


def test_bucket_set_for_1024_matches_kohyas_formula():
    resos = bucket_resolutions(BucketConfig())
    assert (1024, 1024) in resos and (832, 1024) in resos and (1024, 832) in resos
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 1024 * 1024 for w, h in resos)
    assert all(256 <= w <= 1024 and 256 <= h <= 1024 for w, h in resos)
    assert len(resos) == 25 and len(set(resos)) == 25
    # with a larger max side kohya adds buckets such as 768x1344 (area <= 1024^2)
    wide = bucket_resolutions(BucketConfig(max_reso=2048))
    assert (768, 1344) in wide and (1344, 768) in wide and (512, 2048) in wide
    assert all(w * h <= 1024 * 1024 for w, h in wide)


def test_nearest_bucket_prefers_exact_size_then_aspect():
    cfg = BucketConfig()
    assert nearest_bucket(832, 1024, cfg) == (832, 1024)
    assert nearest_bucket(3000, 4000, cfg) == (768, 1024)  # 0.75
    assert nearest_bucket(4000, 3000, cfg) == (1024, 768)
    assert nearest_bucket(5000, 5000, cfg) == (1024, 1024)


@pytest.mark.parametrize("size", [(4000, 3000), (3024, 4032), (2048, 2048), (1920, 1080), (1500, 4000), (1100, 1030)])
def test_large_images_land_on_a_bucket_kohya_does_not_crop(size):
    cfg = BucketConfig()
    plan = plan_bucket(size, cfg)
    assert plan.size == plan.bucket and not plan.warnings
    left, top, right, bottom = plan.box
    assert 0 <= left and 0 <= top and right <= size[0] + 1e-6 and bottom <= size[1] + 1e-6
    assert math.isclose((right - left) / (bottom - top), plan.bucket[0] / plan.bucket[1], rel_tol=1e-9)
    for no_upscale in (False, True):
        reso, resized = kohya_select(*plan.size, cfg, no_upscale)
        assert reso == plan.size and resized == plan.size  # nothing left for kohya to crop


@pytest.mark.parametrize("size", [(700, 800), (600, 400), (300, 900), (513, 515)])
def test_small_images_are_not_upscaled_and_kohya_scales_without_cropping(size):
    cfg = BucketConfig()
    plan = plan_bucket(size, cfg, name="small.jpg")
    assert plan.size[0] <= size[0] and plan.size[1] <= size[1] and not plan.upscaled
    assert plan.warnings and "small.jpg" in plan.warnings[0] and "without upscaling" in plan.warnings[0]
    reso, resized = kohya_select(*plan.size, cfg, no_upscale=False)
    assert reso == plan.bucket and resized == reso  # exact aspect: scaled up to the bucket, no crop


def test_upscale_is_opt_in_and_warned():
    plan = plan_bucket((600, 400), BucketConfig(upscale=True))
    assert plan.upscaled and plan.size == plan.bucket and "upscaled" in plan.warnings[0]


def test_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        plan_bucket((1, 1), BucketConfig())


def test_fit_box_grows_around_a_subject_before_shrinking():
    # a tall face crop in a wide photo grows sideways to the bucket aspect, centred on the face
    box = fit_box_to_aspect((900, 100, 1100, 500), 1.0, (2000, 1000))
    assert box == (800.0, 100.0, 1200.0, 500.0)
    # near the edge it shifts instead of leaving the image
    box = fit_box_to_aspect((0, 100, 200, 500), 1.0, (2000, 1000))
    assert box == (0.0, 100.0, 400.0, 500.0)
    # the whole image can only shrink: a centre crop
    assert fit_box_to_aspect((0, 0, 2000, 1000), 1.0, (2000, 1000)) == (500.0, 0.0, 1500.0, 1000.0)


def test_a_small_crop_in_a_large_image_takes_more_context_instead_of_upscaling():
    face = (900.0, 500.0, 1200.0, 850.0)  # 300x350 head-and-shoulders box in a 3000x2000 photo
    plan = plan_bucket((3000, 2000), BucketConfig(), face)
    assert plan.size == plan.bucket and not plan.warnings and not plan.upscaled
    left, top, right, bottom = plan.box
    assert left <= face[0] and top <= face[1] and right >= face[2] and bottom >= face[3]
    assert (right - left, bottom - top) == pytest.approx(plan.bucket)  # 1:1 pixels, no resampling loss
    # near an edge the grown box shifts but stays inside the image
    plan = plan_bucket((1100, 1100), BucketConfig(), (0.0, 0.0, 300.0, 350.0))
    assert plan.box[0] == 0 and plan.box[1] == 0 and plan.size == plan.bucket
