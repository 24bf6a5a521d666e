"""`lora-cloud dataset`: upload, list, download and delete datasets in storage."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (LIST_PAGE, confirm_or_abort, ctx_obj, emit, err_console, handle_errors, out_console,
                     page_options, report_page, report_problems, run, transfer_progress)
from .train_outputs import next_steps


def _quote(name: str) -> str:
    return f'"{name}"' if " " in name else name

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS


@app.command("upload")
@handle_errors
def upload(
    ctx: typer.Context,
    src: Path = typer.Argument(..., help="Folder of images with optional .txt captions."),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name (letters, digits, . _ - and spaces)."),
    replace: bool = typer.Option(False, "--replace", help="The dataset exists: make it exactly this folder "
                                                          "(files the folder lacks are deleted)."),
    merge: bool = typer.Option(False, "--merge", help="The dataset exists: add this folder's files to it."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out images that cannot be trained on (empty, "
                                                            "truncated, not an image) instead of refusing."),
    force: bool = typer.Option(False, "--force", help="Change the dataset even while a live run trains on it "
                                                      "(that run's trainer then fails its pull or trains on "
                                                      "what it already has)."),
) -> None:
    """Upload a folder as a dataset. Every image is decoded first: a bad one refuses the upload
    (or is left out with --skip-bad). Unchanged files are skipped (size + checksum); the manifest
    goes last, so an interrupted upload shows as incomplete until the same command finishes it."""
    with transfer_progress(ctx, f"uploading {name}") as progress:
        result = run(ctx_obj(ctx).app.library.upload_dataset(src, name, replace=replace, merge=merge,
                                                             progress=progress, skip_bad=skip_bad, force=force))
    for bad in result.bad:
        err_console.print(f"warning: left out {bad['reason']}", markup=False)
    deleted = f", {result.deleted} deleted" if result.deleted else ""
    emit(ctx, result.to_dict(), f"dataset {name!r} {result.result}: {result.files} files uploaded ({result.bytes} "
                                f"bytes), {result.skipped} unchanged{deleted} -> {result.url}")
    n = _quote(result.dataset)
    next_steps(ctx, f"lora-cloud dataset validate {n}",
               f"lora-cloud train plan --dataset {n} --type character|style|concept --out plan/")


@app.command("list")
@handle_errors
def list_(
    ctx: typer.Context,
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many datasets (by name)."),
    limit: int = typer.Option(LIST_PAGE, "--limit", min=1, max=1000, help="Show at most this many."),
    everything: bool = typer.Option(False, "--all", help="Show every dataset (reads every manifest)."),
) -> None:
    """List datasets with image and caption counts; an upload that did not finish shows as incomplete.
    Entries that cannot be read (bucket content is untrusted) are skipped, with a warning on stderr.
    Long lists come a page at a time (--offset, --limit)."""
    found = run(ctx_obj(ctx).app.library.dataset_listing(*page_options(offset, limit, everything)))
    items = found.datasets
    report_problems(found.problems)
    report_page(found, "datasets", len(items))

    def human(_: object) -> None:
        from rich.table import Table
        from rich.text import Text

        if not items:
            out_console.print("no datasets yet: lora-cloud dataset upload DIR --name NAME")
            return
        t = Table("name", "images", "captioned", "size", "trigger", "type", "state")
        for d in items:
            t.add_row(d.name, str(d.images), str(d.captioned), _size(d.bytes),
                      Text(d.trigger or ""), d.lora_type or "", "complete" if d.complete else "INCOMPLETE")
        out_console.print(t)

    emit(ctx, [d.to_dict() for d in items], human)


@app.command("download")
@handle_errors
def download(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Dataset name."),
    dest: Path = typer.Argument(..., help="Folder to download into (created if missing)."),
) -> None:
    """Download a dataset into a folder. Files already there and identical are skipped."""
    with transfer_progress(ctx, f"downloading {name}") as progress:
        result = run(ctx_obj(ctx).app.library.download_dataset(name, dest, progress=progress))
    emit(ctx, result.to_dict(), f"dataset {name!r}: {result.files} files downloaded to {result.path}")


@app.command("delete")
@handle_errors
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Dataset name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a dataset from storage."""
    confirm_or_abort(ctx, f"Delete dataset {name!r} and all its files?", yes)
    data = run(ctx_obj(ctx).app.library.delete_dataset(name))
    emit(ctx, data.to_dict(), f"deleted dataset {name!r} ({data.deleted} files)")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


from .dataset_prepare import register as _reg  # noqa: E402  (prepare / validate)

_reg(app)
