"""`lora-cloud models`: the base weights in the bucket's models/ (service/library/models_cache.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import ctx_obj, emit, err_console, handle_errors, out_console, run

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS


@app.command("status")
@handle_errors
def status(ctx: typer.Context) -> None:
    """Which base-weights files models/ holds."""
    data = run(ctx_obj(ctx).app.models.status())

    def human(_: object) -> None:
        for f in data.files:
            out_console.print(f"{'cached ' if f.cached else 'MISSING'} {f.file:<24} ({f.repo})", markup=False)
        if not data.complete:
            out_console.print("next: lora-cloud models cache", markup=False)

    emit(ctx, data.to_dict(), human)


@app.command("cache")
@handle_errors
def cache(
    ctx: typer.Context,
    from_dirs: list[Path] = typer.Option([], "--from", help="A folder that already holds some of the files (e.g. "
                                                            "ComfyUI/models); searched recursively. Repeatable."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Where one downloaded file waits for its upload "
                                                                     "(default: the system's temp folder; ~23 GB)."),
) -> None:
    """Put the base weights into the bucket's models/ once: from --from folders when they hold a
    file, else from Hugging Face (hf_token, FLUX.1-dev licence accepted). Files already there are
    kept. Every run then skips the ~30 GB download."""
    def said(filename: str, origin: str) -> None:
        if not ctx_obj(ctx).json_output:
            err_console.print(f"caching {filename} from {origin} ...", markup=False)

    data = run(ctx_obj(ctx).app.models.cache(local_dirs=from_dirs, work_dir=work_dir, on_file=said))

    def human(_: object) -> None:
        for name, origin in (data.cached_from or {}).items():
            out_console.print(f"{name:<24} {'already cached' if origin == 'cached' else 'from ' + origin}",
                              markup=False)
        out_console.print(f"models/ in {data.storage} is complete", markup=False)

    emit(ctx, data.to_dict(), human)
