"""What every command shares: the context (settings, storage, state), JSON output and the one
place where :class:`LoraCloudError` becomes an exit code."""

from __future__ import annotations

import contextlib
import functools
import threading
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import typer
from rich.console import Console

from ..errors import LoraCloudError, redact
from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False, soft_wrap=True)


@dataclass
class CliContext:
    home: str | None = None
    json_output: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _storage: Any = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load(self.home)
        return self._settings

    def storage(self):
        """The configured storage, opened once per command."""
        if self._storage is None:
            from ..storage import open_storage

            self._storage = open_storage(settings=self.settings)
        return self._storage

    def hash_cache(self):
        """Local file checksums remembered between runs, so a re-sync does not re-hash."""
        from ..storage.sync import HashCache

        return HashCache(self.settings.home / "hash-cache.json")

    def state(self):
        from ..service.state import StateStore

        return StateStore(self.settings.state_db)


def ctx_obj(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    if obj is None:  # a sub-app invoked directly (tests)
        obj = ctx.find_root().obj = CliContext()
    return obj


def emit(ctx: typer.Context, data: Any, human: Callable[[Any], None] | str | None = None) -> None:
    """Print ``data`` as JSON with ``--json``, else through ``human`` (a callable or a string)."""
    if ctx_obj(ctx).json_output:
        sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")
    elif callable(human):
        human(data)
    elif human is not None:
        out_console.print(human)
    else:
        out_console.print_json(json.dumps(data, default=str))


def report_problems(problems: Any) -> None:
    """Entries a listing had to skip (bucket content it could not read), on stderr, as plain text."""
    for p in problems:
        err_console.print(f"warning: skipped {p.entry}: {p.message}", markup=False)


def confirm_or_abort(ctx: typer.Context, question: str, yes: bool) -> None:
    """Ask before deleting or destroying. Without a terminal to ask on (scripts, --json), the
    caller must have said --yes: nothing is deleted on a guess."""
    if yes:
        return
    if ctx_obj(ctx).json_output or not sys.stdin.isatty():
        from ..errors import ConfigError

        raise ConfigError(f"{question} Pass --yes to confirm (no terminal to ask on).")
    typer.confirm(question, abort=True)


def handle_errors(fn: F) -> F:
    """Turn our errors into a one-line message on stderr and the error kind's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LoraCloudError as exc:
            err_console.print(f"[red]error:[/red] {redact(exc.message)}", markup=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def transfer_progress(ctx: typer.Context, description: str) -> Iterator[Callable[[Any], None]]:
    """Yield a callback for :class:`storage.sync.Progress` events that drives a progress bar on
    stderr.

    Silent with ``--json`` or when stderr is not a terminal, so scripts get clean output.
    """
    from rich.progress import (
        BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
    )

    enabled = not ctx_obj(ctx).json_output and err_console.is_terminal
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=err_console, disable=not enabled, transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)
        lock = threading.Lock()

        def update(event: Any) -> None:
            with lock:
                progress.update(task, completed=event.bytes_done, total=event.bytes_total or None)

        yield update
