"""What every command shares: the context (the one :class:`App` of the command), JSON output and
the one place where :class:`LoraCloudError` becomes an exit code.

Commands reach storage, the state store and the providers only through ``ctx_obj(ctx).app``: the
same services, built the same way, as ComfyUI's nodes, routes and background loop."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from typing import TYPE_CHECKING

import typer

from ..errors import ConfigError, LoraCloudError, redact

if TYPE_CHECKING:  # imported where used: `lora-cloud --help` must not pay for them
    from ..service.app import App
    from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class _LazyConsole:
    """A rich ``Console`` made on first use: importing rich (and the services) is deferred to the
    commands that print, so ``lora-cloud --help`` starts quickly (issue 17)."""

    def __init__(self, **kwargs: Any):
        self._kwargs = kwargs
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return getattr(self._console, name)


err_console: Any = _LazyConsole(stderr=True, highlight=False)
out_console: Any = _LazyConsole(highlight=False, soft_wrap=True)


@dataclass
class CliContext:
    home: str | None = None
    json_output: bool = False
    _app: "App | None" = field(default=None, repr=False)

    @property
    def app(self) -> "App":
        """The command's app, built on first use (a broken config fails here, clearly)."""
        if self._app is None:
            from ..service.app import App

            self._app = App.open(self.home)
        return self._app

    @property
    def settings(self) -> "Settings":
        return self.app.settings

    @property
    def home_path(self) -> Path:
        """The home folder, without reading the settings in it (so ``config set`` can repair a
        broken file)."""
        from ..settings import default_home

        return Path(self.home).expanduser() if self.home else default_home()


def run(coro: Awaitable[T]) -> T:
    """Run one of the app's coroutines to the end (each command has its own event loop)."""
    import asyncio

    return asyncio.run(coro)  # type: ignore[arg-type]


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
    """Entries a listing had to skip (bucket content it could not read), on stderr, as plain text
    (``{"entry", "message"}`` dicts, as the services' listings give them)."""
    for p in problems:
        err_console.print(f"warning: skipped {p['entry']}: {p['message']}", markup=False)


#: entries a listing command shows when not told (`--offset` pages on, `--all` shows everything)
LIST_PAGE = 100


def page_options(offset: int, limit: int, everything: bool) -> tuple[int, int | None]:
    """The (offset, limit) a listing command asks the service for."""
    return offset, None if everything else limit


def report_page(found: dict[str, Any], what: str, shown: int) -> None:
    """On stderr, when the listing has more than this page: how to see the rest."""
    total, offset = found.get("total"), found.get("offset", 0)
    if total is not None and offset + shown < total:
        err_console.print(f"showing {offset + 1}-{offset + shown} of {total} {what}; next page: --offset "
                          f"{offset + shown} (or --all)", markup=False)


def confirm_or_abort(ctx: typer.Context, question: str, yes: bool) -> None:
    """Ask before deleting or destroying. Without a terminal to ask on (scripts, --json), the
    caller must have said --yes: nothing is deleted on a guess."""
    if yes:
        return
    if ctx_obj(ctx).json_output or not sys.stdin.isatty():
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
