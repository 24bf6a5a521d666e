"""The CLI's one place for errors (cli/common.py): OS and state-store failures mapped into the
error tree with a fix, a bug as one line and exit 1 (the traceback only with -v), ``--json``
anywhere, usage errors as JSON."""

from __future__ import annotations

import errno
import json
import sqlite3

import pytest
import typer

from comfy_lora_cloud.cli.common import as_lora_error, handle_errors, hoist_json_flag, run_cli
from comfy_lora_cloud.errors import DatasetError, StorageError


@pytest.mark.parametrize("exc,words", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/x"), "free some disk space"),
    (OSError(errno.EROFS, "Read-only file system", "/home/u/.config/lora-cloud"), "read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/x"), "permissions"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/tmp/f/home"), "a file is in the way"),
    (sqlite3.OperationalError("unable to open database file"), "state store cannot be used"),
])
def test_what_a_user_meets_without_a_bug_is_mapped(exc, words):
    mapped = as_lora_error(exc)
    assert isinstance(mapped, StorageError) and mapped.exit_code == 3 and words in mapped.message
    if getattr(exc, "filename", None):
        assert exc.filename in mapped.message


def test_a_bug_is_not_mapped_and_our_errors_pass_through():
    assert as_lora_error(KeyError("x")) is None
    err = DatasetError("bad")
    assert as_lora_error(err) is err


@pytest.mark.parametrize("args,expected", [
    (["dataset", "list", "--json"], ["--json", "dataset", "list"]),
    (["--json", "dataset", "list"], ["--json", "dataset", "list"]),
    (["dataset", "list"], ["dataset", "list"]),
    (["sync", "push", "d", "p", "--", "--json"], ["sync", "push", "d", "p", "--", "--json"]),  # after --: a value
    (["train", "--json", "status", "--json"], ["--json", "train", "status"]),
])
def test_json_anywhere(args, expected):
    assert hoist_json_flag(args) == expected


def _app():
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context, json_output: bool = typer.Option(False, "--json"),
             verbose: bool = typer.Option(False, "-v")) -> None:
        from comfy_lora_cloud.cli.common import CliContext

        ctx.obj = CliContext(json_output=json_output, verbose=verbose)

    @app.command("boom")
    @handle_errors
    def boom(ctx: typer.Context) -> None:
        raise RuntimeError("a bug")

    @app.command("full")
    @handle_errors
    def full(ctx: typer.Context) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out")

    @app.command("n")
    def n(count: int = typer.Option(1, min=1)) -> None:
        pass

    return app


def test_a_bug_is_one_line_and_exit_1(capsys):
    assert run_cli(_app(), ["boom"]) == 1
    err = capsys.readouterr().err
    assert "error: unexpected RuntimeError: a bug" in err and "Traceback" not in err and "-v" in err
    assert run_cli(_app(), ["-v", "boom"]) == 1
    assert "Traceback" in capsys.readouterr().err  # -v shows it


def test_errors_under_json(capsys):
    assert run_cli(_app(), ["--json", "full"]) == 3
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": "StorageError", "exit_code": 3,
                               "message": "cannot use /data/out: No space left on device; free some disk space and "
                                          "run it again"}
    assert "error: cannot use /data/out" in err
    assert run_cli(_app(), ["--json", "n", "--count", "0"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == "UsageError" and "--count" in err and "Traceback" not in err
