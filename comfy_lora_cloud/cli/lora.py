"""`lora-cloud lora`."""

from __future__ import annotations

import typer

app = typer.Typer(help="lora", no_args_is_help=True)
