"""`lora-cloud budget`: show and set the spending limits the watchdog enforces."""

from __future__ import annotations

import typer

from ..errors import ConfigError
from ..service.budgets import Budgets
from ..settings import set_value
from .common import ctx_obj, emit, handle_errors, out_console

app = typer.Typer(help="Spending limits: max $/hr, $ per run, $ per month, hours per run.", no_args_is_help=True)
KEYS = tuple(Budgets().to_dict())


@app.command("show")
@handle_errors
def show(ctx: typer.Context) -> None:
    """Print the budgets."""
    data = Budgets.from_settings(ctx_obj(ctx).settings).to_dict()
    emit(ctx, data, lambda d: [out_console.print(f"{k:<14} {v:g}", markup=False) for k, v in d.items()])


@app.command("set")
@handle_errors
def set_(ctx: typer.Context, key: str = typer.Argument(..., help=f"One of: {', '.join(KEYS)}."),
         value: float = typer.Argument(..., help="The new limit (0 disables a $ limit).")) -> None:
    """Change one budget (stored in config.toml)."""
    key = key.strip().lower().replace("-", "_")
    if key not in KEYS:
        raise ConfigError(f"unknown budget {key!r}; known: {', '.join(KEYS)}")
    obj = ctx_obj(ctx)
    set_value(obj.settings.home, key, str(value))
    obj._settings = None
    data = Budgets.from_settings(obj.settings).to_dict()
    emit(ctx, data, f"{key} = {data[key]:g}")
