"""`lora-cloud config`."""

from __future__ import annotations

import typer

app = typer.Typer(help="config", no_args_is_help=True)
