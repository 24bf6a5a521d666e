"""`lora-cloud config`: show (secrets masked) and set settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from .common import ctx_obj, emit, err_console, handle_errors, out_console

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS


@app.command("show")
@handle_errors
def show(ctx: typer.Context) -> None:
    """Print every setting; secrets show only whether they are set. With a damaged settings file,
    the settings in force (its last good copy, else the built-in defaults) and the problem (on
    stderr, and as ``problems`` in the JSON), exit 2."""
    app_ = ctx_obj(ctx).use_last_good()
    data = app_.settings.masked()
    problem = app_.settings_problem
    if problem:
        data["problems"] = [problem]

    def human(d: dict) -> None:
        for k, v in d.items():
            if k != "problems":
                out_console.print(f"{k:<26} {'' if v is None else v}", markup=False)

    emit(ctx, data, human)
    if problem:
        err_console.print(f"error: damaged settings, the values above are the ones in force: {problem}",
                          markup=False)
        raise typer.Exit(ConfigError.exit_code)


@app.command("set", context_settings={"ignore_unknown_options": True})  # VALUE may be -1
@handle_errors
def set_(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Setting name, e.g. storage, vast_api_key, max_dph."),
    value: str = typer.Argument(
        None, help="New value. For secrets, omit it (or pass '-') to read it from stdin without echo."
    ),
    from_file: Optional[Path] = typer.Option(None, "--from-file", help="Read the value from this file, whole "
                                                                       "(a service-account key file, say)."),
) -> None:
    """Set one setting. Secrets go to <home>/secrets.toml (mode 0600), never to config.toml. A value
    read from stdin or a file is read whole (a key file is many lines of JSON)."""
    from ..settings import SECRET_KEYS, set_value

    home = ctx_obj(ctx).home_path
    norm = key.strip().lower().replace("-", "_")
    if from_file is not None:
        if value not in (None, "-"):
            raise ConfigError("give the value or --from-file, not both")
        try:
            value = from_file.expanduser().read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--from-file {from_file}: cannot be read as text ({getattr(exc, 'strerror', None) or exc})") from None
    elif value in (None, "-"):
        if norm in SECRET_KEYS and sys.stdin.isatty():
            value = typer.prompt(f"{norm}", hide_input=True)
        else:
            value = sys.stdin.read().strip()  # all of it: a key file is many lines of JSON
    if norm == "gcs_service_account_json" and value:
        from ..service.doctor import service_account_problem

        problem = service_account_problem(value)
        if problem:  # caught here, not at the first bucket call hours later
            raise ConfigError(f"gcs_service_account_json {problem}; nothing was stored")
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
