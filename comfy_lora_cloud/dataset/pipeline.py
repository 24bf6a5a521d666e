"""The dataset pipeline: source folder -> cropped, bucketed, captioned images + ``dataset.json``.

Per image (in worker processes, one image per task, results put back in source order so the
output never depends on scheduling): load -> [background mask] -> crop for the LoRA type ->
[background removed] -> cut to the kohya bucket -> write -> hash and checksum. Then, in this
process, captions (a model is loaded once and batched; it would not fit twice in memory),
near-duplicates, the manifest, and a validation report.

A file that fails gives one entry in ``skipped`` with a clear reason; the others go on. The
source folder is only read.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

from ..errors import ConfigError, DatasetError, LoraCloudError
from ..storage.base import checksum_file
from ..storage.layout import CAPTION_SUFFIX, MANIFEST
from .bucket import BucketConfig, plan_bucket
from .crop import CROP_FOR_TYPE, DETECT_SIZE, CropMode, crop_for
from .load import DEFAULT_MAX_PIXELS, SIDECAR_EXTENSIONS, load_image

LORA_TYPES = ("character", "style", "concept")
MANIFEST_FORMAT = 1

Progress = Callable[[str, int, int], None]  # (stage, done, total); stages: process, caption


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides the output; recorded in the manifest."""

    lora_type: Literal["character", "style", "concept"] = "character"
    trigger: str | None = None
    crop: CropMode | None = None  # default: face / object / none by type
    remove_background: bool = False
    background_model: str | None = None  # a .onnx file; default: rembg's usual places
    bucket: BucketConfig = field(default_factory=BucketConfig)
    caption: Literal["florence", "blip2", "none"] = "none"
    caption_model: str | None = None  # a local model folder
    caption_device: str = "auto"
    caption_batch: int = 4
    overwrite_captions: bool = False
    detect_size: int | None = DETECT_SIZE
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int | None = None  # None: one per CPU core; 1: in this process

    def __post_init__(self) -> None:
        # a bad choice is a bad argument (ConfigError, exit 2), not a bad dataset
        if self.lora_type not in LORA_TYPES:
            raise ConfigError(f"unknown LoRA type {self.lora_type!r}; use one of {', '.join(LORA_TYPES)}")
        if self.caption not in ("florence", "blip2", "none"):
            raise ConfigError(f"unknown caption model {self.caption!r}; use florence, blip2 or none")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError("image_format must be jpg or png")
        if self.trigger is not None and (not self.trigger.strip() or not self.trigger.isprintable()):
            raise ConfigError("the trigger word must be non-empty and on one line")

    @property
    def crop_mode(self) -> CropMode:
        return self.crop or CROP_FOR_TYPE[self.lora_type]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop"] = self.crop_mode
        d["bucket"] = self.bucket.to_dict()
        for key in ("background_model", "caption_model"):  # the model's name, not a local path
            d[key] = Path(d[key]).name if d[key] else None
        del d["workers"], d["caption_device"]  # how, not what: they do not change the output
        return d


@dataclass(frozen=True)
class Job:
    index: int
    source: str  # absolute path
    rel: str  # path relative to the source folder, '/'-separated
    root: str
    out_stem: str  # output file name without extension
    out_dir: str
    options: PrepareOptions


@dataclass
class ItemResult:
    index: int
    source: str
    image: str | None = None
    width: int = 0
    height: int = 0
    bucket: tuple[int, int] | None = None
    crop_box: list[float] | None = None
    crop_method: str | None = None
    faces: int = 0
    upscaled: bool = False
    phash: str | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class PrepareResult:
    out_dir: Path | None  # None after publishing from a temporary folder
    manifest: dict
    report: "object"  # validate.ValidationReport

    @property
    def images(self) -> int:
        return len(self.manifest["files"])

    @property
    def skipped(self) -> list[dict]:
        return self.manifest["skipped"]


# ---- per image (runs in workers) -------------------------------------------------------------

_removers: dict[str, object] = {}


def _remover(options: PrepareOptions):
    """This process's remover for the model :func:`prepare_dataset` resolved (one session each)."""
    from .background import BackgroundRemover, find_model

    model_file = find_model(model_path=options.background_model)
    key = str(model_file)
    if key not in _removers:
        _removers[key] = BackgroundRemover(model_file)
    return _removers[key]


def process_one(job: Job) -> ItemResult:
    """Load, crop, bucket and write one image. Never raises: failures come back in ``error``."""
    from PIL import Image

    from .dedupe import image_hash

    opts = job.options
    result = ItemResult(job.index, job.rel)
    try:
        loaded = load_image(job.source, root=job.root, max_pixels=opts.max_pixels)
        image = loaded.image
        result.warnings += loaded.warnings
        mask = None
        if opts.remove_background:
            remover = _remover(opts)
            mask = remover.mask(image)
        crop = crop_for(opts.crop_mode, image, mask=mask, name=job.rel, detect_size=opts.detect_size)
        result.warnings += crop.warnings
        if mask is not None:
            image = remover.apply(image, mask)
        plan = plan_bucket(image.size, opts.bucket, crop.box, name=job.rel)
        result.warnings += list(plan.warnings)
        out = image.resize(plan.size, Image.Resampling.LANCZOS, box=plan.box, reducing_gap=2.0)
        name = f"{job.out_stem}.{opts.image_format}"
        target = Path(job.out_dir) / name
        if opts.image_format == "jpg":
            out.save(target, "JPEG", quality=opts.jpeg_quality, subsampling=0)
        else:
            out.save(target, "PNG", compress_level=4)
        result.image = name
        result.width, result.height = out.size
        result.bucket = plan.bucket
        result.crop_box = [round(v, 1) for v in plan.box]
        result.crop_method = crop.method
        result.faces = len(crop.faces)
        result.upscaled = plan.upscaled
        result.phash = image_hash(out).to_hex()
    except LoraCloudError as exc:
        result.error = exc.message
    except ValueError as exc:  # e.g. too small to train on
        result.error = str(exc)
    except Exception as exc:  # one file must never stop the others; say what it was
        result.error = f"{job.rel}: unexpected {type(exc).__name__}: {exc}"
    return result


def _init_worker() -> None:
    # Each worker is one core's worth of work: keep native thread pools from oversubscribing.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# ---- the whole folder ------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(rel: str) -> str:
    """A portable output name from a source path (odd characters become ``_``)."""
    stem = Path(rel).stem
    stem = _UNSAFE.sub("_", stem).strip("._-")
    return stem[:80] or "image"


def list_sources(source: Path) -> list[str]:
    """Candidate image files under ``source`` (relative, sorted): everything but hidden files,
    caption/manifest sidecars and a folder's Markdown notes (a README, a SOURCES.md), so
    unsupported files are reported rather than silently ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.startswith(".") or Path(fn).suffix.lower() in SIDECAR_EXTENSIONS | {".md"}:
                continue
            found.append(Path(dirpath, fn).relative_to(source).as_posix())
    return sorted(found)


def make_jobs(source: Path, out_dir: Path, options: PrepareOptions) -> list[Job]:
    jobs, used = [], set()
    for i, rel in enumerate(list_sources(source)):
        stem = safe_stem(rel)
        candidate, n = stem, 2
        while candidate.casefold() in used:  # case-insensitive file systems too
            candidate, n = f"{stem}-{n}", n + 1
        used.add(candidate.casefold())
        jobs.append(Job(i, str(source / rel), rel, str(source), candidate, str(out_dir), options))
    return jobs


def run_jobs(jobs: list[Job], workers: int | None, progress: Progress | None = None,
             fn: Callable[[Job], ItemResult] = process_one) -> list[ItemResult]:
    """Run ``fn`` (:func:`process_one`) over ``jobs`` in a process pool; results in job order.

    A worker that dies (a native crash in a decoder or detector, the OOM killer) takes down the
    pool; the jobs it left unfinished are then retried one per fresh process, so only the file
    that kills its process is reported as failed.
    """
    total = len(jobs)
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or total <= 1:
        results = []
        for done, job in enumerate(jobs, 1):
            results.append(fn(job))
            if progress:
                progress("process", done, total)
        return results
    # spawn, not fork: the caller (ComfyUI) may hold CUDA and threads, which fork would copy.
    ctx = multiprocessing.get_context("spawn")
    results_by_index: dict[int, ItemResult] = {}

    def record(r: ItemResult) -> None:
        results_by_index[r.index] = r
        if progress:
            progress("process", len(results_by_index), total)

    try:
        with ProcessPoolExecutor(min(workers, total), mp_context=ctx, initializer=_init_worker) as pool:
            for fut in as_completed([pool.submit(fn, job) for job in jobs]):
                if fut.exception() is None:
                    record(fut.result())
    except BrokenProcessPool:
        pass
    for job in jobs:
        if job.index in results_by_index:
            continue
        try:
            with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker) as pool:
                record(pool.submit(fn, job).result())
        except BrokenProcessPool:
            record(ItemResult(job.index, job.rel, error=f"{job.rel}: the worker process crashed on this file"))
    return [results_by_index[j.index] for j in jobs]


def prepare_dataset(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: PrepareOptions,
    *,
    name: str | None = None,
    progress: Progress | None = None,
    captioner=None,
) -> PrepareResult:
    """Prepare ``source`` into ``out_dir`` (created; must not be inside ``source``).

    ``captioner``: a ready :class:`~.caption.Captioner` to reuse (ComfyUI keeps one loaded);
    by default one is built from the options when captions are wanted.
    """
    from .caption import Captioner, caption_all
    from .dedupe import ImageHash, find_duplicates
    from .validate import validate_folder

    src = Path(source).resolve()
    out = Path(out_dir).resolve()
    if not src.is_dir():
        raise DatasetError(f"source folder {source} does not exist")
    if out == src or src in out.parents:
        raise DatasetError("the output folder must not be inside the source folder (the source is never written)")
    out.mkdir(parents=True, exist_ok=True)
    if options.remove_background:  # fail once, clearly, before any work when the model is missing
        from ..settings import current_home
        from .background import find_model

        # resolved here: workers do not see this process's home folder override
        model = find_model(model_path=options.background_model, home=current_home())
        options = replace(options, background_model=str(model))

    jobs = make_jobs(src, out, options)
    if not jobs:
        raise DatasetError(f"no files in {source}")
    results = run_jobs(jobs, options.workers, progress)
    good = [r for r in results if r.error is None]

    sources = {j.index: j.source for j in jobs}
    existing = [_existing_caption(sources[r.index]) for r in good]
    if captioner is None and options.caption != "none" and any(options.overwrite_captions or not e for e in existing):
        captioner = Captioner(options.caption, options.caption_model, options.caption_device, options.caption_batch)
    if options.caption == "none":
        captioner = None
    images = _LazyImages([out / r.image for r in good])
    captions = caption_all(captioner, images, existing, trigger=options.trigger, lora_type=options.lora_type,
                           overwrite=options.overwrite_captions)
    if progress and good:
        progress("caption", len(good), len(good))

    files = []
    for r, (text, origin) in zip(good, captions):
        caption_name = Path(r.image).with_suffix(CAPTION_SUFFIX).name
        (out / caption_name).write_text(text + "\n" if text else "", encoding="utf-8")
        sums = checksum_file(out / r.image)
        files.append({
            "image": r.image, "caption_file": caption_name, "source": r.source,
            "width": r.width, "height": r.height, "bucket": list(r.bucket),
            "size": sums.size, "md5": sums.md5, "crc32c": sums.crc32c,
            "caption": text, "caption_origin": origin,
            "crop_box": r.crop_box, "crop_method": r.crop_method, "faces": r.faces,
            "upscaled": r.upscaled, "phash": r.phash,
        })
    duplicates = find_duplicates([(r.image, ImageHash.from_hex(r.phash)) for r in good])
    settings = options.to_dict()
    settings["caption_model"] = settings["caption_model"] or (options.caption if options.caption != "none" else None)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "settings": settings,
        "files": files,
        "skipped": [{"source": r.source, "error": r.error} for r in results if r.error is not None],
        "duplicates": duplicates,
        "warnings": [w for r in good for w in r.warnings],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    report = validate_folder(out)
    return PrepareResult(out, manifest, report)


class _LazyImages:
    """A sequence that opens each prepared image only when the captioner asks for it."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return im.convert("RGB")


def _existing_caption(source_image: str) -> str | None:
    from .caption import existing_caption

    return existing_caption(source_image)
