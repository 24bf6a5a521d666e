"""`lora-cloud sync push|pull`: mirror a local folder and a storage prefix."""

from __future__ import annotations

from pathlib import Path

import typer

from ..storage import sync as syncer
from ..storage.base import clean_prefix
from .common import confirm_or_abort, ctx_obj, emit, err_console, handle_errors, transfer_progress

app = typer.Typer(help="Mirror a folder to or from a storage prefix (plan by size + checksum).",
                  no_args_is_help=True)

SHOW_DELETES = 10  # how many of the files a --delete would remove are listed before asking


def _prefix(p: str) -> str:
    p = p.strip().lstrip("/")
    p = p if p.endswith("/") or not p else p + "/"
    return clean_prefix(p)


def _confirm_deletes(ctx: typer.Context, plan, where: str, yes: bool) -> None:
    """List what --delete would remove (the first few and how many) and ask; without a terminal
    the command needs --yes. The storage layer has already refused a top-level prefix."""
    if not plan.deletes:
        return
    shown = plan.deletes[:SHOW_DELETES]
    more = len(plan.deletes) - len(shown)
    if not ctx_obj(ctx).json_output:
        err_console.print(f"--delete would remove {len(plan.deletes)} file(s) from {where}:", markup=False)
        for rel in shown:
            err_console.print(f"  {rel}", markup=False, highlight=False)
        if more:
            err_console.print(f"  ... and {more} more", markup=False)
    listed = ", ".join(shown) + (f" and {more} more" if more else "")
    confirm_or_abort(ctx, f"Delete {len(plan.deletes)} file(s) from {where} ({listed})?", yes)


def _run(ctx: typer.Context, plan, label: str, dry_run: bool, cache, where: str, yes: bool) -> None:
    obj = ctx_obj(ctx)
    summary = plan.to_dict()
    if dry_run:
        emit(ctx, {"dry_run": True, **summary, "would_delete": plan.deletes}, f"would {label}: {summary}")
        return
    _confirm_deletes(ctx, plan, where, yes)
    with transfer_progress(ctx, label) as progress:
        result = syncer.apply(plan, obj.storage(), workers=obj.settings.sync_workers, progress=progress,
                              cache=cache)
    data = {**summary, **result.to_dict()}
    emit(ctx, data, f"{label}: {result.files} files, {result.bytes} bytes in {result.seconds:.1f}s"
                    + (f", {result.deleted} deleted" if result.deleted else ""))


@app.command("push")
@handle_errors
def push(
    ctx: typer.Context,
    local: Path = typer.Argument(..., help="Local folder."),
    prefix: str = typer.Argument(..., help="Storage prefix, e.g. datasets/cat/ or models/flux/."),
    delete: bool = typer.Option(False, "--delete", help="Delete objects under the prefix that the folder lacks "
                                                        "(not allowed for the whole bucket or a top-level folder)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would move."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (needed without a terminal)."),
) -> None:
    """Upload what differs from LOCAL to PREFIX."""
    obj = ctx_obj(ctx)
    if not local.is_dir():
        from ..errors import ConfigError

        raise ConfigError(f"{local} is not a folder")
    cache = obj.hash_cache()
    plan = syncer.plan_push(obj.storage(), local, _prefix(prefix), delete=delete, cache=cache)
    _run(ctx, plan, f"push {local} -> {prefix}", dry_run, cache, f"{obj.storage().url.rstrip('/')}/{plan.prefix}",
         yes)


@app.command("pull")
@handle_errors
def pull(
    ctx: typer.Context,
    prefix: str = typer.Argument(..., help="Storage prefix."),
    local: Path = typer.Argument(..., help="Local folder (created if missing)."),
    delete: bool = typer.Option(False, "--delete", help="Delete local files that the prefix lacks "
                                                        "(not allowed when pulling the whole bucket or a "
                                                        "top-level folder)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would move."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (needed without a terminal)."),
) -> None:
    """Download what differs from PREFIX to LOCAL."""
    obj = ctx_obj(ctx)
    cache = obj.hash_cache()
    plan = syncer.plan_pull(obj.storage(), _prefix(prefix), local, delete=delete, cache=cache)
    _run(ctx, plan, f"pull {prefix} -> {local}", dry_run, cache, str(local), yes)
