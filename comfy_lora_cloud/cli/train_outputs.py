"""`lora-cloud train logs RUN`, `train samples RUN --out DIR`, and the live progress bar of
`train status RUN --follow` (step, loss, ETA, $ so far).

Added to the `train` noun by :func:`register`; the service side is ``app.outputs``
(service/runs/outputs.py) and ``app.runs.follow``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from ..models import RunState
from .common import ctx_obj, emit, err_console, handle_errors, out_console, run

#: a run that ended like this makes `train status` exit 7 (TrainingError's code): a script can tell
FAILED_STATES = (RunState.FAILED.value, RunState.TIMED_OUT.value, RunState.LOST.value)


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
    app.command("samples")(samples)


def exit_for(state: str | None) -> None:
    """Exit 7 when the run failed (``failed``, ``timed_out``, ``lost``); a run that is live, done
    or stopped by the user is exit 0."""
    if state in FAILED_STATES:
        raise typer.Exit(7)


def next_steps(ctx: typer.Context, *lines: str) -> None:
    """What to do next, after the result (human output only; scripts get JSON)."""
    if ctx_obj(ctx).json_output:
        return
    for line in lines:
        out_console.print(f"next: {line}", markup=False, highlight=False)


def hints_for_end(view: dict[str, Any]) -> list[str]:
    run_id, state = view.get("run_id") or view.get("id"), view.get("state")
    if state == RunState.DONE.value:
        lora = str(view.get("lora") or "").rsplit("/", 1)[-1].removesuffix(".safetensors")
        return [f"lora-cloud lora download {_quote(lora)}" if lora else "lora-cloud lora list",
                f"lora-cloud train samples {run_id} --out samples/{run_id}"]
    if state in FAILED_STATES:
        return [f"lora-cloud train logs {run_id}", "docs/troubleshooting.md lists each error with its fix"]
    return []


@handle_errors
def logs(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id (see: lora-cloud train status)."),
    tail: int = typer.Option(200, "--tail", "-n", min=0, max=1_000_000, help="Lines to show (0: all)."),
) -> None:
    """The trainer's console log of a run, read from the bucket (works from any machine)."""
    found = run(ctx_obj(ctx).app.outputs.log(run_id, tail=tail))

    def human(_: dict[str, Any]) -> None:
        for line in found.lines:
            out_console.print(line, markup=False, highlight=False, soft_wrap=True)

    emit(ctx, found.to_dict(), human)


@handle_errors
def samples(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id (see: lora-cloud train status)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the sample images (created if missing)."),
) -> None:
    """Download the sample images a run rendered while training (checksum verified)."""
    got = run(ctx_obj(ctx).app.outputs.download_samples(run_id, out))
    for p in got.problems:
        err_console.print(f"warning: skipped {p.entry}: {p.message}", markup=False)

    def human(_: dict[str, Any]) -> None:
        kept = len(got.samples) - len(got.downloaded)
        out_console.print(f"{len(got.samples)} sample image(s) in {got.dir} ({len(got.downloaded)} downloaded"
                          + (f", {kept} already there" if kept else "") + ")", markup=False)

    emit(ctx, got.to_dict(), human)


def _quote(name: str) -> str:
    return f'"{name}"' if " " in name else name


def _eta(st: Any, now: float) -> str:
    if st is None or not st.eta_seconds:
        return "-"
    left = max(0.0, st.eta_seconds - max(0.0, now - st.updated_at))  # counts down between reads
    return f"{int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"


def follow_run(ctx: typer.Context, run_id: str, interval: float, print_event: Any, print_row: Any) -> None:
    """Follow one run until it ends: a live bar on a terminal (step/total, loss, ETA, $ so far),
    the new events as lines; without a terminal one status line per change (not per read); with
    ``--json`` each event and the final status as JSON. Exit 7 when the run failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    obj = ctx_obj(ctx)
    app = obj.app
    live = not obj.json_output and err_console.is_terminal

    async def go() -> dict[str, Any]:
        final: dict[str, Any] = {}
        last_row: tuple[Any, ...] | None = None
        columns = (TextColumn("{task.fields[state]:<10}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TextColumn("ETA {task.fields[eta]}"),
                   TextColumn("{task.fields[spent]}"))
        with Progress(*columns, console=err_console, disable=not live, refresh_per_second=2) as bar:
            task = bar.add_task(run_id, total=None, state="waiting", loss="-", eta="-", spent="")
            async for new, st, record, ended in app.runs.follow(run_id, interval=interval):
                for e in new:
                    emit(ctx, e, print_event)
                spent = app.outputs.spend_so_far(run_id)
                if st is not None:
                    bar.update(task, completed=st.step, total=st.total_steps or None, state=st.state.value,
                               loss="-" if st.loss is None else f"{st.loss:.4f}", eta=_eta(st, time.time()),
                               spent="" if spent is None else f"${spent:.2f} so far")
                if ended:
                    final = st.to_dict() if st is not None and st.state.is_terminal else {
                        "run_id": run_id, "state": record.state.value, "step": st.step if st else 0,
                        "total_steps": st.total_steps if st else 0, "error": record.error}
                    if spent is not None:
                        final["spent_usd"] = spent
                    continue  # follow() ends after the run's end
                row = (st.state, st.step, st.loss) if st is not None else None
                if st is not None and not live and not obj.json_output and row != last_row:
                    print_row({**st.to_dict(), "spent_usd": spent})
                last_row = row
        return final

    final = run(go())
    emit(ctx, final, print_row)
    if not obj.json_output and final.get("error"):
        out_console.print(f"  error: {final['error']}", markup=False)
    next_steps(ctx, *hints_for_end(final))
    exit_for(final.get("state"))
