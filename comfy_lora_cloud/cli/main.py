"""The `lora-cloud` command. Each noun lives in its own module and is added here."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .. import __version__
from .common import CliContext, hoist_json_flag, quiet_flag_types, run_cli
from .lazy import Noun, lazy_group

#: the nouns, each a module below cli/ with an ``app``: imported only when its command runs
#: (cli/lazy.py; `--help` lists them from here). The one home of each noun's one-line help.
NOUNS: dict[str, Noun] = {
    "config": ("config", "Show and change settings (secrets are stored 0600 and always masked)."),
    "dataset": ("dataset", "Datasets in your bucket: datasets/<name>/ (images, .txt captions, dataset.json)."),
    "lora": ("lora", "Trained LoRAs in your bucket: loras/<name>.safetensors (+ .json)."),
    "sync": ("sync", "Mirror a folder to or from a storage prefix (plan by size + checksum)."),
    "train": ("train", "Plan, start and stop training runs, and follow their progress."),
    "offers": ("offers", "Find the offer with the cheapest expected total for a training job."),
    "instances": ("instances", "List and manage the instances LoRA Cloud rented."),
    "costs": ("costs", "What LoRA Cloud has spent: today, this month, per run."),
    "budget": ("budget", "Spending limits: max $/hr, $ per run, $ per month, hours per run."),
    "comfy": ("comfy", "A ComfyUI on a rented GPU: start, status, open, run a workflow, stop."),
    "doctor": ("doctor", "Check every setting and credential against the real services, with fixes."),
    "models": ("models", "Base weights (flux, ae, clip_l, t5xxl) cached in the bucket's models/."),
}

app = typer.Typer(
    name="lora-cloud",
    help="Train Flux LoRAs on rented vast.ai GPUs with your data in your own bucket.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: rich's help renderer costs more start-up than the rest of `--help`
    rich_markup_mode=None,
    cls=lazy_group(NOUNS, rich_markup_mode=None),
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


def main(argv: list[str] | None = None) -> None:
    """The entry point: ``--json`` may come anywhere, usage errors and bugs become one message (and
    JSON under ``--json``), never a traceback; the exit code follows errors.py's table."""
    quiet_flag_types()
    raise SystemExit(run_cli(app, hoist_json_flag(sys.argv[1:] if argv is None else list(argv))))


if __name__ == "__main__":  # pragma: no cover
    main()
