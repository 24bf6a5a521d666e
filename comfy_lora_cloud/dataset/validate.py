"""Check a prepared dataset folder before paying for a GPU: a report with errors (training
would fail or learn the wrong thing) and warnings (it would work, but worse).

Errors: no images, unreadable images, missing or empty captions.
Warnings: too few images for the LoRA type, trigger word missing from a caption, an image not at
a bucket's exact aspect ratio (kohya would crop it again; the report says how much), images
smaller than their bucket, near-duplicates, buckets holding a single image.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ImageLoadError
from ..storage.layout import MANIFEST
from .bucket import BucketConfig, bucket_resolutions, nearest_bucket
from .dedupe import find_duplicates, image_hash
from .load import IMAGE_EXTENSIONS, load_image

# Recommended image counts per LoRA type.
RECOMMENDED_COUNT = {"character": (10, 30), "style": (30, 150), "concept": (15, 60)}


@dataclass
class ImageCheck:
    name: str
    width: int
    height: int
    bucket: tuple[int, int]
    caption_chars: int


@dataclass
class ValidationReport:
    count: int = 0
    images: list[ImageCheck] = field(default_factory=list)
    buckets: dict[str, int] = field(default_factory=dict)
    duplicates: list[list[str]] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    missing_captions: list[str] = field(default_factory=list)
    trigger: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [f"{self.count} images, {len(self.buckets)} buckets: "
                 + ", ".join(f"{k} x{v}" for k, v in sorted(self.buckets.items()))]
        if self.trigger:
            lines.append(f"trigger: {self.trigger}")
        lines += [f"ERROR   {e}" for e in self.errors]
        lines += [f"warning {w}" for w in self.warnings]
        lines.append("OK" if self.ok else f"FAILED: {len(self.errors)} error(s)")
        return "\n".join(lines)


def validate_folder(
    folder: str | Path,
    *,
    trigger: str | None = None,
    lora_type: str | None = None,
    bucket: BucketConfig | None = None,
) -> ValidationReport:
    """Validate the images and ``.txt`` captions directly inside ``folder``.

    Settings not given are read from ``dataset.json`` when the folder has one.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    settings = manifest.get("settings") if isinstance(manifest, dict) else None
    settings = settings if isinstance(settings, dict) else {}  # a manifest is untrusted input
    manifest_trigger = settings.get("trigger") if isinstance(settings.get("trigger"), str) else None
    trigger = trigger if trigger is not None else manifest_trigger
    lora_type = lora_type or (settings.get("lora_type") if isinstance(settings.get("lora_type"), str) else None)
    bucket_note = None
    if bucket is None:
        try:
            bucket = BucketConfig(**settings["bucket"]) if isinstance(settings.get("bucket"), dict) else BucketConfig()
        except (TypeError, ValueError):
            bucket, bucket_note = BucketConfig(), "the manifest's bucket settings cannot be read; checked with the defaults"
    report = ValidationReport(trigger=trigger)
    if bucket_note:
        report.warnings.append(bucket_note)
    buckets = set(bucket_resolutions(bucket))
    hashes = []
    small = []
    not_bucket: list[tuple[str, float]] = []  # (name, fraction kohya will crop away)
    no_trigger = []
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    for name in names:
        path = folder / name
        try:
            loaded = load_image(path, root=folder)
        except ImageLoadError as exc:
            report.corrupt.append(name)
            report.errors.append(exc.message)
            continue
        w, h = loaded.image.size
        b = nearest_bucket(w, h, bucket)
        caption = _caption(path)
        report.images.append(ImageCheck(name, w, h, b, len(caption or "")))
        report.buckets[f"{b[0]}x{b[1]}"] = report.buckets.get(f"{b[0]}x{b[1]}", 0) + 1
        hashes.append((name, image_hash(loaded.image)))
        if not caption:
            report.missing_captions.append(name)
        elif trigger and trigger.lower() not in caption.lower():
            no_trigger.append(name)
        if (w, h) not in buckets and w * b[1] != h * b[0]:  # kohya crops unless the aspect is exact
            ratio = (w / h) / (b[0] / b[1])
            not_bucket.append((name, 1 - min(ratio, 1 / ratio)))
        if w < b[0] or h < b[1]:
            small.append(name)
    report.count = len(report.images)
    report.duplicates = find_duplicates(hashes)
    _summarise(report, lora_type, not_bucket, small, no_trigger)
    return report


def _summarise(report: ValidationReport, lora_type: str | None, not_bucket: list[tuple[str, float]],
               small: list[str], no_trigger: list[str]) -> None:
    if report.count == 0:
        report.errors.append("no readable images")
    if report.missing_captions:
        report.errors.append(f"{len(report.missing_captions)} image(s) without a caption or with an empty one: "
                             + _names(report.missing_captions))
    if no_trigger:
        report.warnings.append(f"trigger word {report.trigger!r} missing from {len(no_trigger)} caption(s): {_names(no_trigger)}")
    low, high = RECOMMENDED_COUNT.get(lora_type or "", (1, 10**9))
    if 0 < report.count < low:
        report.warnings.append(f"{report.count} images; a {lora_type} LoRA usually wants {low}-{high}")
    elif report.count > high:
        report.warnings.append(f"{report.count} images; more than the {low}-{high} a {lora_type} LoRA usually uses")
    if not_bucket:
        worst = max(f for _, f in not_bucket)
        report.warnings.append(f"{len(not_bucket)} image(s) not at a bucket's exact aspect ratio; kohya will crop up to "
                               f"{worst:.0%} off them: {_names([n for n, _ in not_bucket])}")
    if small:
        report.warnings.append(f"{len(small)} image(s) smaller than their bucket (kohya upscales them): {_names(small)}")
    for group in report.duplicates:
        report.warnings.append(f"near-duplicates: {', '.join(group)}")
    singles = [k for k, v in report.buckets.items() if v == 1]
    if report.count >= 4 and len(singles) > len(report.buckets) / 2:
        report.warnings.append(f"{len(singles)} buckets hold a single image ({', '.join(sorted(singles))}); "
                               "with batch size > 1 these train alone")


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _caption(image_path: Path) -> str | None:
    p = image_path.with_suffix(".txt")
    if not p.is_file():
        return None
    return p.read_text(encoding="utf-8", errors="replace").strip()


def _read_manifest(folder: Path) -> dict:
    p = folder / MANIFEST
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
