"""`lora-cloud budget`: show and set the spending limits the guard enforces."""

from __future__ import annotations

import typer

from .common import ctx_obj, emit, handle_errors, out_console, run

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS
KEYS = ("max_dph", "max_run_usd", "max_month_usd", "max_run_hours")


@app.command("show")
@handle_errors
def show(ctx: typer.Context) -> None:
    """Print the budgets."""
    budgets = ctx_obj(ctx).app.costs.budgets()
    emit(ctx, budgets.to_dict(),
         lambda _d: [out_console.print(f"{k:<14} {getattr(budgets, k):g}", markup=False) for k in KEYS])


@app.command("set", context_settings={"ignore_unknown_options": True})  # VALUE may be -1
@handle_errors
def set_(ctx: typer.Context, key: str = typer.Argument(..., help=f"One of: {', '.join(KEYS)}."),
         value: float = typer.Argument(..., help="The new limit (0 disables a $ limit).")) -> None:
    """Change one budget (stored in config.toml; a running ComfyUI applies it on its next guard round)."""
    budgets = run(ctx_obj(ctx).app.costs.set_budgets({key: value}))
    norm = key.strip().lower().replace("-", "_")
    emit(ctx, budgets.to_dict(), f"{norm} = {getattr(budgets, norm):g}")
