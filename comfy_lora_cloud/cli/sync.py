"""`lora-cloud sync push|pull`: mirror a local folder and a storage prefix."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from .common import (confirm_or_abort, ctx_obj, emit, err_console, handle_errors, out_console, run,
                     transfer_progress)

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS

SHOW_DELETES = 10  # how many of the files a --delete would remove are listed before asking


def _confirm_deletes(ctx: typer.Context, plan, where: str, yes: bool) -> None:
    """List what --delete would remove (the first few and how many) and ask; without a terminal
    the command needs --yes. The sync engine has already refused a top-level prefix."""
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


def _apply(ctx: typer.Context, plan, label: str, dry_run: bool, where: str, yes: bool) -> None:
    mirror = ctx_obj(ctx).app.mirror
    summary = plan.to_dict()
    if dry_run:
        verb = "upload" if plan.direction == "push" else "download"
        data = {"dry_run": True, **summary, "would_delete": plan.deletes,
                f"would_{verb}": [{"file": t.rel, "bytes": t.size} for t in plan.transfers]}

        def human(_d: dict) -> None:
            for t in plan.transfers:
                out_console.print(f"{verb:<8} {t.rel}  ({t.size} bytes)", markup=False, highlight=False)
            for rel in plan.deletes:
                out_console.print(f"delete   {rel}", markup=False, highlight=False)
            for rel in plan.rejected:
                out_console.print(f"refused  {rel} (a name that cannot be synced safely)", markup=False,
                                  highlight=False)
            out_console.print(f"dry run, nothing changed: would {verb} {len(plan.transfers)} file(s) "
                              f"({plan.bytes} bytes), delete {len(plan.deletes)}, {len(plan.skips)} already the same",
                              markup=False)

        emit(ctx, data, human)
        return
    _confirm_deletes(ctx, plan, where, yes)
    with transfer_progress(ctx, label) as progress:
        result = run(mirror.apply(plan, progress))
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
    dry_run: bool = typer.Option(False, "--dry-run", help="List each file that would move or be deleted; "
                                                          "change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (needed without a terminal)."),
) -> None:
    """Upload what differs from LOCAL to PREFIX."""
    if not local.is_dir():
        raise ConfigError(f"{local} is not a folder")
    app = ctx_obj(ctx).app
    plan = run(app.mirror.plan_push(local, prefix, delete=delete))
    _apply(ctx, plan, f"push {local} -> {prefix}", dry_run, f"{app.storage.url.rstrip('/')}/{plan.prefix}", yes)


@app.command("pull")
@handle_errors
def pull(
    ctx: typer.Context,
    prefix: str = typer.Argument(..., help="Storage prefix."),
    local: Path = typer.Argument(..., help="Local folder (created if missing)."),
    delete: bool = typer.Option(False, "--delete", help="Delete local files that the prefix lacks "
                                                        "(not allowed when pulling the whole bucket or a "
                                                        "top-level folder)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List each file that would move or be deleted; "
                                                          "change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (needed without a terminal)."),
) -> None:
    """Download what differs from PREFIX to LOCAL."""
    plan = run(ctx_obj(ctx).app.mirror.plan_pull(prefix, local, delete=delete))
    _apply(ctx, plan, f"pull {prefix} -> {local}", dry_run, str(local), yes)
