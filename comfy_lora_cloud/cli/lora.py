"""`lora-cloud lora`: list, download and delete trained LoRAs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (LIST_PAGE, confirm_or_abort, ctx_obj, emit, handle_errors, out_console, page_options,
                     report_page, report_problems, run)
from .dataset import _size

app = typer.Typer(help="Trained LoRAs in your bucket: loras/<name>.safetensors (+ .json).", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_(
    ctx: typer.Context,
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many LoRAs (by name)."),
    limit: int = typer.Option(LIST_PAGE, "--limit", min=1, max=1000, help="Show at most this many."),
    everything: bool = typer.Option(False, "--all", help="Show every LoRA."),
) -> None:
    """List LoRAs with size and the run that made them (a page at a time: --offset, --limit)."""
    found = run(ctx_obj(ctx).app.library.lora_listing(*page_options(offset, limit, everything)))
    items = found["loras"]
    report_problems(found["problems"])
    report_page(found, "LoRAs", len(items))

    def human(rows: list[dict]) -> None:
        from rich.table import Table
        from rich.text import Text

        if not rows:
            out_console.print("no LoRAs yet")
            return
        t = Table("name", "size", "dataset", "preset", "trigger")
        for r in rows:
            m = r["metadata"] or {}
            # sidecar text comes from the bucket: never rich markup
            t.add_row(r["name"], _size(r["size"]), *(Text(str(m.get(k, ""))[:200])
                                                     for k in ("dataset", "preset", "trigger")))
        out_console.print(t)

    emit(ctx, items, human)


@app.command("download")
@handle_errors
def download(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="LoRA name."),
    dest: Optional[Path] = typer.Option(
        None, "--to", help="Folder (default: comfyui_loras_dir setting, else the current folder)."
    ),
) -> None:
    """Download a LoRA (checksum verified; written through a temporary name)."""
    settings = ctx_obj(ctx).settings
    folder = dest or (Path(settings.comfyui_loras_dir) if settings.comfyui_loras_dir else Path.cwd())
    data = run(ctx_obj(ctx).app.library.download_lora(name, folder))
    emit(ctx, {"lora": name, "path": data["path"], "size": data["size"]}, f"saved {data['path']}")


@app.command("delete")
@handle_errors
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="LoRA name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a LoRA and its metadata from storage."""
    confirm_or_abort(ctx, f"Delete LoRA {name!r}?", yes)
    data = run(ctx_obj(ctx).app.library.delete_lora(name))
    emit(ctx, {"lora": name, "deleted": data["deleted"]}, f"deleted LoRA {name!r}")
