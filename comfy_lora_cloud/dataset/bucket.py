"""Aspect-ratio buckets, computed exactly as kohya sd-scripts computes them, so every image we
write already has a bucket's exact size and kohya neither crops nor resizes it again.

kohya (``make_bucket_resolutions`` and ``BucketManager.select_bucket``): with the training
resolution W x H, max area A = W*H, step s (64) and side limits [min_reso, max_reso], the buckets
are the square ``floor(sqrt(A)/s)*s`` plus, for every width w = min_reso, min_reso+s, ... <=
max_reso, ``(w, h)`` and ``(h, w)`` with ``h = min(max_reso, floor(A/w/s)*s)`` when h >= min_reso.
An image whose size is one of these buckets is used as is; any other image goes to the bucket
of the nearest aspect ratio and is scaled to cover it and centre-cropped. With
``bucket_no_upscale`` an image whose area fits is only cropped down to multiples of s; an exact
bucket size is therefore safe in both modes.

We choose the bucket by the same nearest-aspect rule, cut the crop box to that exact aspect
ratio (growing it inside the image where it can, so a face crop keeps context) and resize the
crop to the bucket. A crop with fewer pixels than the bucket grows further, up to the bucket's
size where the image allows, rather than being upscaled. An image smaller than its bucket is not enlarged unless asked (it is kept at
the largest size with the bucket's exact aspect ratio, which kohya scales without cropping);
either way that is reported as a warning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

Box = tuple[float, float, float, float]  # left, top, right, bottom in source pixels


@dataclass(frozen=True)
class BucketConfig:
    """The kohya dataset settings this dataset is cut for; the trainer must use the same."""

    resolution: int = 1024
    min_reso: int = 256
    max_reso: int = 1024
    steps: int = 64
    upscale: bool = False  # enlarge images smaller than their bucket (with a warning)

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.resolution < self.steps or self.min_reso > self.max_reso:
            raise ValueError(f"invalid bucket settings {self}")

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True)
class BucketPlan:
    """Where one image goes: crop ``box`` from the source, resize it to ``size``."""

    bucket: tuple[int, int]
    size: tuple[int, int]  # output size: the bucket, or smaller when not upscaling a tiny image
    box: Box
    upscaled: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)


@lru_cache(maxsize=32)
def bucket_resolutions(config: BucketConfig) -> tuple[tuple[int, int], ...]:
    """kohya's predefined bucket sizes for ``config``, sorted."""
    s = config.steps
    max_area = config.resolution * config.resolution
    resos = {(int(math.sqrt(max_area) // s) * s,) * 2}
    width = config.min_reso
    while width <= config.max_reso:
        height = min(config.max_reso, int((max_area // width) // s) * s)
        if height >= config.min_reso:
            resos.add((width, height))
            resos.add((height, width))
        width += s
    return tuple(sorted(resos))


def nearest_bucket(width: float, height: float, config: BucketConfig) -> tuple[int, int]:
    """The bucket kohya would pick for an image of this size (exact size first, else nearest aspect)."""
    resos = bucket_resolutions(config)
    if (width, height) in resos:
        return int(width), int(height)
    aspect = width / height
    errors = [abs(w / h - aspect) for w, h in resos]
    return resos[errors.index(min(errors))]  # first minimum, as numpy's argmin in kohya


def fit_box_to_aspect(box: Box, aspect: float, image_size: tuple[int, int]) -> Box:
    """A box of exactly ``aspect`` (w/h) around ``box``'s centre, inside the image.

    The short side grows first (keeping context around a face); only when the image is too
    small for that does the long side shrink.
    """
    iw, ih = image_size
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    cx, cy = (left + right) / 2, (top + bottom) / 2
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    if w > iw:
        w, h = iw, iw / aspect
    if h > ih:
        w, h = ih * aspect, ih
    left = min(max(cx - w / 2, 0.0), iw - w)
    top = min(max(cy - h / 2, 0.0), ih - h)
    return (left, top, left + w, top + h)


def plan_bucket(
    image_size: tuple[int, int], config: BucketConfig, box: Box | None = None, name: str = ""
) -> BucketPlan:
    """Choose the bucket for the region ``box`` (default: the whole image) and the exact crop."""
    iw, ih = image_size
    region = box if box is not None else (0.0, 0.0, float(iw), float(ih))
    rw, rh = region[2] - region[0], region[3] - region[1]
    bucket = nearest_bucket(rw, rh, config)
    crop = fit_box_to_aspect(region, bucket[0] / bucket[1], image_size)
    cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    if cw + 0.5 < bucket[0]:
        # Too few pixels for the bucket: take more context around the subject (up to the
        # bucket's size, as far as the image allows) before falling back to a smaller image.
        cx, cy = (crop[0] + crop[2]) / 2, (crop[1] + crop[3]) / 2
        wanted = (cx - bucket[0] / 2, cy - bucket[1] / 2, cx + bucket[0] / 2, cy + bucket[1] / 2)
        crop = fit_box_to_aspect(wanted, bucket[0] / bucket[1], image_size)
        cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    label = f"{name}: " if name else ""
    if cw + 0.5 >= bucket[0] and ch + 0.5 >= bucket[1]:
        return BucketPlan(bucket, bucket, crop)
    if config.upscale:
        note = (
            f"{label}region {cw:.0f}x{ch:.0f} is smaller than its {bucket[0]}x{bucket[1]} bucket; "
            f"upscaled x{bucket[0] / cw:.2f}"
        )
        return BucketPlan(bucket, bucket, crop, upscaled=True, warnings=(note,))
    # Not enlarged: the largest size below the region with the bucket's exact aspect ratio, so
    # kohya scales it to the bucket without cropping (and bucket_no_upscale trims < one step).
    g = math.gcd(*bucket)
    unit_w, unit_h = bucket[0] // g, bucket[1] // g
    m = int(min(cw / unit_w, ch / unit_h))
    out_w, out_h = unit_w * m, unit_h * m
    if min(out_w, out_h) < config.steps:
        raise ValueError(f"{label}{cw:.0f}x{ch:.0f} is too small to train on (under {config.steps} px)")
    note = (
        f"{label}region {cw:.0f}x{ch:.0f} is smaller than its {bucket[0]}x{bucket[1]} bucket; kept at "
        f"{out_w}x{out_h} without upscaling (kohya will upscale it x{bucket[0] / out_w:.2f} when training)"
    )
    return BucketPlan(bucket, (out_w, out_h), crop, warnings=(note,))
