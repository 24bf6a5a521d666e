"""`lora-cloud sync push|pull`: mirror a local folder and a storage prefix."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from .common import ctx_obj, emit, handle_errors, run, transfer_progress

app = typer.Typer(help="Mirror a folder to or from a storage prefix (plan by size + checksum).",
                  no_args_is_help=True)


def _apply(ctx: typer.Context, plan, label: str, dry_run: bool) -> None:
    mirror = ctx_obj(ctx).app.mirror
    summary = plan.to_dict()
    if dry_run:
        emit(ctx, {"dry_run": True, **summary}, f"would {label}: {summary}")
        return
    with transfer_progress(ctx, label) as progress:
        result = run(mirror.apply(plan, progress))
    data = {**summary, **result.to_dict()}
    emit(ctx, data, f"{label}: {result.files} files, {result.bytes} bytes in {result.seconds:.1f}s")


@app.command("push")
@handle_errors
def push(
    ctx: typer.Context,
    local: Path = typer.Argument(..., help="Local folder."),
    prefix: str = typer.Argument(..., help="Storage prefix, e.g. datasets/cat/ or models/."),
    delete: bool = typer.Option(False, "--delete", help="Delete objects under the prefix that the folder lacks."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would move."),
) -> None:
    """Upload what differs from LOCAL to PREFIX."""
    if not local.is_dir():
        raise ConfigError(f"{local} is not a folder")
    plan = run(ctx_obj(ctx).app.mirror.plan_push(local, prefix, delete=delete))
    _apply(ctx, plan, f"push {local} -> {prefix}", dry_run)


@app.command("pull")
@handle_errors
def pull(
    ctx: typer.Context,
    prefix: str = typer.Argument(..., help="Storage prefix."),
    local: Path = typer.Argument(..., help="Local folder (created if missing)."),
    delete: bool = typer.Option(False, "--delete", help="Delete local files that the prefix lacks."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would move."),
) -> None:
    """Download what differs from PREFIX to LOCAL."""
    plan = run(ctx_obj(ctx).app.mirror.plan_pull(prefix, local, delete=delete))
    _apply(ctx, plan, f"pull {prefix} -> {local}", dry_run)
