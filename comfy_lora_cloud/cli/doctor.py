"""`lora-cloud doctor`: every setting and credential checked against the real services, each
line with its fix (the checks: service/doctor.py). Exit 0 when nothing failed, else the first
failed check's error kind (2 settings, 3 storage, 4 vast.ai, 5 SSH, 7 Hugging Face)."""

from __future__ import annotations

import typer

from ..errors import ConfigError
from .common import ctx_obj, emit, handle_errors, out_console, run

app = typer.Typer()  # its help: cli/main.py NOUNS

MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@app.callback(invoke_without_command=True)
@handle_errors
def doctor(ctx: typer.Context) -> None:
    """Check settings, storage rights, the vast.ai key, credit and SSH key, the Hugging Face token
    and FLUX.1-dev licence, the cached base weights and ComfyUI. Rents nothing."""
    from ..service.doctor import Check, summary

    obj = ctx_obj(ctx)
    try:
        app_ = obj.use_last_good()
    except ConfigError as exc:  # the settings themselves: nothing else can be checked
        checks = [Check("settings", "fail", exc.message, "fix it with `lora-cloud config set KEY VALUE` or "
                        f"`config unset KEY` (files: {obj.home_path})", exc.exit_code)]
    else:
        checks = run(app_.doctor.run())
    line, code = summary(checks)
    data = {"checks": [c.to_dict() for c in checks], "summary": line, "ok": code == 0}

    def human(_d: dict) -> None:
        for c in checks:
            out_console.print(f"{MARK.get(c.status, c.status)}  {c.name:<13} {c.detail}", markup=False,
                              highlight=False)
            if c.fix and c.status in ("fail", "warn"):
                out_console.print(f"      {'':<13} fix: {c.fix}", markup=False, highlight=False)
        out_console.print(line, markup=False)

    emit(ctx, data, human)
    if code:
        raise typer.Exit(code)


__all__ = ["app", "doctor"]
