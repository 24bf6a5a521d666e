"""Runs the official ``vastai`` CLI's own code for many commands in one process.

Each vastai start costs ~2 s of imports on this machine; the conformance test sends argv lists on
stdin (one JSON line each) and gets back ``{"rc", "out", "err"}`` lines, so the CLI code under test
is unchanged while the test stays fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> None:
    import vastai.cli.main as cli

    first = True
    for line in sys.stdin:
        argv = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        rc = 0
        sys.argv = ["vastai", *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if first:  # the real main(): builds the global parser, then runs the command
                    first = False
                    cli.main()
                else:  # main() cannot run twice (it adds global options); do its last steps
                    cli.run_command(cli.parser.parse_args())
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception as exc:  # noqa: BLE001 - report, as the CLI would crash
                rc, _ = 1, err.write(f"Traceback: {exc!r}")
        sys.__stdout__.write(json.dumps({"rc": rc, "out": out.getvalue(), "err": err.getvalue()}) + "\n")
        sys.__stdout__.flush()


if __name__ == "__main__":
    main()
