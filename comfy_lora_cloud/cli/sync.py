"""`lora-cloud sync push|pull`: mirror a local folder and a storage prefix."""

from __future__ import annotations

from pathlib import Path

import typer

from ..storage import sync as syncer
from ..storage.base import clean_prefix
from .common import ctx_obj, emit, handle_errors, transfer_progress

app = typer.Typer(help="Mirror a folder to or from a storage prefix (plan by size + checksum).",
                  no_args_is_help=True)


def _prefix(p: str) -> str:
    p = p.strip().lstrip("/")
    p = p if p.endswith("/") or not p else p + "/"
    return clean_prefix(p)


def _run(ctx: typer.Context, plan, label: str, dry_run: bool, cache) -> None:
    obj = ctx_obj(ctx)
    summary = plan.to_dict()
    if dry_run:
        emit(ctx, {"dry_run": True, **summary}, f"would {label}: {summary}")
        return
    with transfer_progress(ctx, label) as progress:
        result = syncer.apply(plan, obj.storage(), workers=obj.settings.sync_workers, progress=progress,
                              cache=cache)
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
    obj = ctx_obj(ctx)
    if not local.is_dir():
        from ..errors import ConfigError

        raise ConfigError(f"{local} is not a folder")
    cache = obj.hash_cache()
    plan = syncer.plan_push(obj.storage(), local, _prefix(prefix), delete=delete, cache=cache)
    _run(ctx, plan, f"push {local} -> {prefix}", dry_run, cache)


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
    obj = ctx_obj(ctx)
    cache = obj.hash_cache()
    plan = syncer.plan_pull(obj.storage(), _prefix(prefix), local, delete=delete, cache=cache)
    _run(ctx, plan, f"pull {prefix} -> {local}", dry_run, cache)
