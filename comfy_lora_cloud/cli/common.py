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

try:  # typer >= 0.2x vendors click as typer._click; older releases use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from ..errors import ConfigError, LoraCloudError, redact

if TYPE_CHECKING:  # imported where used: `lora-cloud --help` must not pay for them
    from ..service.app import App
    from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class _LazyConsole:
    """A rich ``Console`` made on first use: importing rich (and the services) is deferred to the
    commands that print, so ``lora-cloud --help`` starts quickly."""

    def __init__(self, **kwargs: Any):
        self._kwargs = kwargs
        self._console: Any = None

    def _real(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return self._console

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._real(), name)

    # rich's Live (every progress bar) enters its console as a context manager; special methods
    # are looked up on the type, not through __getattr__
    def __enter__(self) -> Any:
        return self._real().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._real().__exit__(*exc)


err_console: Any = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)
out_console: Any = _LazyConsole(highlight=False, soft_wrap=True)


@dataclass
class CliContext:
    home: str | None = None
    json_output: bool = False
    verbose: bool = False
    fall_back: bool = False  # a damaged settings file gives way to its last good copy (use_last_good)
    _app: "App | None" = field(default=None, repr=False)

    @property
    def app(self) -> "App":
        """The command's app, built on first use (a broken config fails here, clearly, unless
        the command asked for :meth:`use_last_good`)."""
        if self._app is None:
            from ..service.app import App

            self._app = App.open(self.home, fall_back=self.fall_back)
        return self._app

    def use_last_good(self) -> "App":
        """The app of a command that must work on a damaged home (the guard, ``config show``,
        ``doctor``): a damaged settings file gives way to its last good copy, else the built-in
        defaults, and ``app.settings_problem`` names it."""
        if self._app is None:
            self.fall_back = True
        return self.app

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
    (:class:`~comfy_lora_cloud.models.Problem` records)."""
    for p in problems:
        err_console.print(f"warning: skipped {p.entry}: {p.message}", markup=False)


#: `instances reconcile` did its job on a damaged home (a settings file or the state store): the
#: problem is on stderr; docs/troubleshooting.md lists it with the others
EXIT_DAMAGED_HOME = 9


def report_damaged_home(problems: Any) -> bool:
    """The damaged-home problems of a guard pass (its ``Problem`` records: settings files, the
    state store), on stderr; True when there were any."""
    found = [p for p in problems if p.kind in ("settings", "state_store")]
    for p in found:
        err_console.print(f"warning: damaged home ({p.kind}): {p.message}", markup=False)
    return bool(found)


def finite(value: Any) -> Any:
    """An option callback: a number option must be finite (``nan`` and ``inf`` pass click's own
    range checks, since every comparison with NaN is false)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"{value!r} is not a finite number")
    return value


#: entries a listing command shows when not told (`--offset` pages on, `--all` shows everything)
LIST_PAGE = 100


def page_options(offset: int, limit: int, everything: bool) -> tuple[int, int | None]:
    """The (offset, limit) a listing command asks the service for."""
    return offset, None if everything else limit


def report_page(found: Any, what: str, shown: int) -> None:
    """On stderr, when the listing (a page record with ``total`` and ``offset``) has more than this
    page: how to see the rest."""
    total, offset = found.total, found.offset
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


def as_lora_error(exc: BaseException) -> LoraCloudError | None:
    """The error tree's view of an exception raised outside it, for the few kinds a user meets
    without any bug being involved: a folder that cannot be written (read-only home, full disk,
    a file where a folder should be), a state store SQLite cannot open. None: a bug."""
    import errno
    import sqlite3

    from ..errors import StorageError

    if isinstance(exc, LoraCloudError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        return StorageError(f"the state store cannot be used ({exc}): is the home folder writable and the disk "
                            "not full? (`lora-cloud config path` shows where it is)")
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        why = exc.strerror or str(exc) or type(exc).__name__
        fix = {errno.ENOSPC: "free some disk space and run it again",
               errno.EDQUOT: "free some disk space and run it again",
               errno.EROFS: "the file system is read-only: choose another folder (e.g. LORA_CLOUD_HOME=...)",
               errno.EACCES: "check the folder's permissions, or choose another one (e.g. LORA_CLOUD_HOME=...)",
               errno.EPERM: "check the folder's permissions, or choose another one (e.g. LORA_CLOUD_HOME=...)",
               errno.ENOTDIR: "a file is in the way where a folder is needed",
               errno.EISDIR: "a folder is in the way where a file is needed",
               errno.EEXIST: "something is already in the way there"}.get(exc.errno or 0, "")
        return StorageError(f"cannot use{where}: {why}" + (f"; {fix}" if fix else ""))
    return None


def error_record(exc: BaseException, exit_code: int) -> dict[str, Any]:
    """What ``--json`` prints on stdout for an error: its kind, message and exit code."""
    if isinstance(exc, LoraCloudError):
        return {"error": type(exc).__name__, "message": redact(exc.message), "exit_code": exit_code}
    message = getattr(exc, "format_message", lambda: str(exc))()
    return {"error": type(exc).__name__, "message": redact(str(message)), "exit_code": exit_code}


def report_error(exc: BaseException, exit_code: int, *, json_output: bool, verbose: bool = False) -> None:
    """One line on stderr (``error: ...``), and with ``--json`` the error as JSON on stdout. An
    exception outside the error tree is a bug: its type and message, the traceback only with -v."""
    if json_output:
        sys.stdout.write(json.dumps(error_record(exc, exit_code)) + "\n")
        sys.stdout.flush()
    if isinstance(exc, LoraCloudError):
        err_console.print(f"error: {redact(exc.message)}", markup=False)
        return
    err_console.print(f"error: unexpected {type(exc).__name__}: {redact(str(exc))[:500]}", markup=False)
    if verbose:
        import traceback

        err_console.print(redact("".join(traceback.format_exception(exc))), markup=False)
    else:
        err_console.print("this is a bug in lora-cloud: run the command again with -v for the details and report "
                          "them", markup=False)


def handle_errors(fn: F) -> F:
    """Turn our errors into a one-line message on stderr (and JSON on stdout with ``--json``) and
    the error kind's exit code (errors.py). Local file-system and state-store failures are
    mapped into the tree first (:func:`as_lora_error`); anything else is a bug: exit 1, no
    traceback unless -v."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = next((a for a in [*args, *kwargs.values()] if hasattr(a, "find_root")), None)
        obj = ctx_obj(ctx) if ctx is not None else CliContext()
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click_exceptions.ClickException):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the edge: every error becomes a message and a code
            known = as_lora_error(exc)
            code = known.exit_code if known is not None else 1
            report_error(known or exc, code, json_output=obj.json_output, verbose=obj.verbose)
            raise typer.Exit(code) from None

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


# ---- the entry point's part ------------------------------------------------------------------
def hoist_json_flag(args: list[str]) -> list[str]:
    """``--json`` anywhere before a ``--`` means the root option: ``lora-cloud dataset list --json``
    is ``lora-cloud --json dataset list``."""
    end = args.index("--") if "--" in args else len(args)
    if "--json" not in args[:end]:
        return args
    return ["--json", *[a for a in args[:end] if a != "--json"], *args[end:]]


def run_cli(app: Any, args: list[str]) -> int:
    """Run the typer app without click's own error printing, so that a usage error (exit 2) and an
    abort look like every other error: one line, JSON on stdout under ``--json``."""
    json_output = bool(args) and args[0] == "--json"
    verbose = any(a in ("-v", "--verbose") for a in args)
    try:
        code = app(args, prog_name="lora-cloud", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError:  # a bare group: its help, as click would show it
        app([*args, "--help"], prog_name="lora-cloud", standalone_mode=False)
        return 2
    except click_exceptions.ClickException as exc:
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        if json_output:
            sys.stdout.write(json.dumps({"error": "UsageError", "message": message, "exit_code": exc.exit_code}) + "\n")
        err_console.print(f"error: {message}{hint}", markup=False)
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted: nothing was changed", markup=False)
        return 1
    except Exception as exc:  # noqa: BLE001 - outside any command (the root callback): still no traceback
        known = as_lora_error(exc)
        code = known.exit_code if known is not None else 1
        report_error(known or exc, code, json_output=json_output, verbose=verbose)
        return code
    return code if isinstance(code, int) else 0


def quiet_flag_types() -> None:
    """typer's help shows ``<bool>`` next to every on/off flag (``--yes <bool>``), which reads as if
    the flag took a value: show nothing there, as click does."""
    from typer.core import TyperOption

    if getattr(TyperOption, "_lora_cloud_quiet", False):
        return
    original = TyperOption.display_type_rich

    def display_type_rich(self: Any, ctx: Any) -> Any:
        if self.is_flag and not self.count:
            return None
        return original(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    TyperOption._lora_cloud_quiet = True  # type: ignore[attr-defined]
