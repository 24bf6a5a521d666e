"""The `lora-cloud` command. Each noun lives in its own module and is added here."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .. import __version__
from .common import CliContext, hoist_json_flag, quiet_flag_types, run_cli

app = typer.Typer(
    name="lora-cloud",
    help="Train Flux LoRAs on rented vast.ai GPUs with your data in your own bucket.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: rich's help renderer costs more start-up than the rest of `--help` (issue 17)
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lora-cloud {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
    home: Optional[str] = typer.Option(
        None, "--home", envvar="LORA_CLOUD_HOME", help="Config/state folder (default: per-user folder)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more (secrets stay masked)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    import logging

    from ..settings import install_log_redaction

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    ctx.obj = CliContext(home=home, json_output=json_output, verbose=verbose)


# ---- nouns: one line each ------------------------------------------------------------------
from . import config as _config  # noqa: E402
from . import dataset as _dataset  # noqa: E402
from . import lora as _lora  # noqa: E402
from . import sync as _sync  # noqa: E402
from . import train as _train  # noqa: E402
from . import budget as _budget, costs as _costs, instances as _instances, offers as _offers  # noqa: E402
from . import comfy as _comfy  # noqa: E402

app.add_typer(_config.app, name="config")
app.add_typer(_dataset.app, name="dataset")
app.add_typer(_lora.app, name="lora")
app.add_typer(_sync.app, name="sync")
app.add_typer(_train.app, name="train")
app.add_typer(_offers.app, name="offers")
app.add_typer(_instances.app, name="instances")
app.add_typer(_costs.app, name="costs")
app.add_typer(_budget.app, name="budget")
app.add_typer(_comfy.app, name="comfy")
from . import doctor as _doctor, models as _models  # noqa: E402  (issue 14)

app.add_typer(_doctor.app, name="doctor")
app.add_typer(_models.app, name="models")


def main(argv: list[str] | None = None) -> None:
    """The entry point: ``--json`` may come anywhere, usage errors and bugs become one message (and
    JSON under ``--json``), never a traceback; the exit code follows errors.py's table."""
    quiet_flag_types()
    raise SystemExit(run_cli(app, hoist_json_flag(sys.argv[1:] if argv is None else list(argv))))


if __name__ == "__main__":  # pragma: no cover
    main()
