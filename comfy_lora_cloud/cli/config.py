"""`lora-cloud config`: show (secrets masked) and set settings."""

from __future__ import annotations

import sys

import typer

from .common import ctx_obj, emit, handle_errors, out_console

app = typer.Typer(help="Show and change settings (secrets are stored 0600 and always masked).", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(ctx: typer.Context) -> None:
    """Print every setting; secrets show only whether they are set."""
    s = ctx_obj(ctx).settings
    data = s.masked()

    def human(d: dict) -> None:
        for k, v in d.items():
            out_console.print(f"{k:<26} {'' if v is None else v}", markup=False)

    emit(ctx, data, human)


@app.command("set")
@handle_errors
def set_(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Setting name, e.g. storage, vast_api_key, max_dph."),
    value: str = typer.Argument(
        None, help="New value. For secrets, omit it (or pass '-') to read it from stdin without echo."
    ),
) -> None:
    """Set one setting. Secrets go to <home>/secrets.toml (mode 0600), never to config.toml."""
    from ..settings import SECRET_KEYS, set_value

    home = ctx_obj(ctx).home_path
    norm = key.strip().lower().replace("-", "_")
    if value in (None, "-"):
        if norm in SECRET_KEYS and sys.stdin.isatty():
            value = typer.prompt(f"{norm}", hide_input=True)
        else:
            value = sys.stdin.read().strip()  # all of it: a key file is many lines of JSON
    is_secret = set_value(home, key, value)
    shown = "**** (set)" if is_secret else value
    emit(ctx, {"key": norm, "value": shown, "secret": is_secret}, f"{norm} = {shown}")


@app.command("unset")
@handle_errors
def unset(ctx: typer.Context, key: str = typer.Argument(..., help="Setting name.")) -> None:
    """Remove a setting so its default (or the environment) applies again."""
    from ..settings import set_value

    set_value(ctx_obj(ctx).home_path, key, None)
    emit(ctx, {"key": key, "unset": True}, f"{key} unset")


@app.command("path")
@handle_errors
def path(ctx: typer.Context) -> None:
    """Print where settings, secrets, state and local storage live."""
    s = ctx_obj(ctx).settings
    data = {
        "home": str(s.home),
        "config": str(s.home / "config.toml"),
        "secrets": str(s.home / "secrets.toml"),
        "state": str(s.state_db),
        "storage": s.storage_url,
    }
    emit(ctx, data, lambda d: [out_console.print(f"{k:<8} {v}", markup=False) for k, v in d.items()])
