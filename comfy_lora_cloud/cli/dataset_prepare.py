"""`lora-cloud dataset prepare` and `lora-cloud dataset validate`.

Added to the `dataset` noun by :func:`register` (the noun's other commands live in dataset.py).
"""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import DatasetError
from .common import ctx_obj, emit, err_console, handle_errors, out_console, run
from .train_outputs import next_steps


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)
    app.command("validate")(validate)


@handle_errors
def prepare(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="A folder of photos, or the name of a dataset already in storage."),
    name: str = typer.Option(..., "--name", "-n", help="Name of the prepared dataset (datasets/<name>/)."),
    lora_type: str = typer.Option("character", "--type", "-t", help="character | style | concept"),
    caption: str = typer.Option("none", "--caption", help="florence | blip2 | none"),
    trigger: Optional[str] = typer.Option(None, "--trigger", help="Trigger word placed in every caption."),
    remove_background: bool = typer.Option(False, "--remove-background", help="Replace backgrounds with white (rembg)."),
    caption_model: Optional[str] = typer.Option(None, "--caption-model", help="Local Florence-2 / BLIP-2 model folder."),
    background_model: Optional[str] = typer.Option(None, "--background-model", help="rembg .onnx model file."),
    resolution: int = typer.Option(1024, "--resolution", min=256, max=2048,
                                   help="Training resolution (kohya buckets; a multiple of 64)."),
    upscale: bool = typer.Option(False, "--upscale", help="Enlarge images smaller than their bucket."),
    overwrite_captions: bool = typer.Option(False, "--overwrite-captions", help="Re-caption images that have a .txt."),
    replace_existing: bool = typer.Option(False, "--replace", help="Overwrite an existing dataset of that name."),
    force: bool = typer.Option(False, "--force", help="Replace the dataset even while a live run trains on it "
                                                      "(that run's trainer then fails its pull or trains on "
                                                      "what it already has)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=256,
                                          help="Parallel processes (default: CPU cores)."),
    device: str = typer.Option("auto", "--device", help="Caption device: auto | cpu | cuda | mps."),
) -> None:
    """Crop, bucket and caption photos for a LoRA type, then upload them to storage."""
    obj = ctx_obj(ctx)
    with _progress(enabled=not obj.json_output) as progress:
        result = run(obj.app.library.prepare(
            source, name, lora_type=lora_type, caption=caption, trigger=trigger,
            remove_background=remove_background, caption_model=caption_model, background_model=background_model,
            resolution=resolution, upscale=upscale, overwrite_captions=overwrite_captions,
            replace_existing=replace_existing, workers=workers, device=device, progress=progress, force=force))
    data = {
        "name": name,
        "images": result.images,
        "skipped": result.skipped,
        "warnings": result.manifest["warnings"],
        "duplicates": result.manifest["duplicates"],
        "report": result.report.to_dict(),
    }

    def human(d: dict) -> None:
        out_console.print(f"prepared {d['images']} images into datasets/{name}/", markup=False)
        for s in d["skipped"]:
            out_console.print(f"skipped {s['error']}", markup=False)
        out_console.print(result.report.to_text(), markup=False)

    emit(ctx, data, human)
    n = f'"{name}"' if " " in name else name
    next_steps(ctx, f"lora-cloud train plan --dataset {n} --type {lora_type} --out plan/  (steps, time and $)")


@handle_errors
def validate(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Dataset name in storage."),
    trigger: Optional[str] = typer.Option(None, "--trigger", help="Expect this trigger (default: the manifest's)."),
) -> None:
    """Check a stored dataset: images, captions, buckets, duplicates, trigger word. Exit 6 on errors."""
    report = run(ctx_obj(ctx).app.library.validate(name, trigger))
    emit(ctx, report.to_dict(), lambda _: out_console.print(report.to_text(), markup=False))
    if not report.ok:
        raise typer.Exit(DatasetError.exit_code)
    n = f'"{name}"' if " " in name else name
    next_steps(ctx, f"lora-cloud train plan --dataset {n} --type character|style|concept --out plan/")


class _progress:
    """A rich bar per stage (process, caption, upload), drawn on stderr; silent with --json."""

    def __init__(self, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=err_console, disable=not enabled)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.bar.start()
        return self.update

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)
