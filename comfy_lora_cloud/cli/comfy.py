"""`lora-cloud comfy`: a ComfyUI on a rented GPU, for people without one: start, status, open,
run a workflow, stop. The same sessions (``service/sessions/control.py``) as the sidebar's Generate
section and the Remote Generate node.

A forwarded port lives as long as the process that holds it, so ``start`` and ``open`` leave a
small background process (``comfy tunnel``, one per session) holding the tunnel; it exits when
the session ends. ``run`` uses a tunnel of its own for the length of the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..errors import ConfigError, TunnelError
from .common import ctx_obj, emit, err_console, handle_errors, out_console, run

if TYPE_CHECKING:
    from ..service.sessions import SessionView, TunnelKeeper

# service/sessions/request.py's default (the CLI imports the services only when a command runs)
DEFAULT_IDLE_MINUTES = 20.0

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS


def _money(v: Any) -> str:
    return f"${v:.2f}" if isinstance(v, (int, float)) else "-"


def _line(view: SessionView) -> str:
    remote = view.remote
    parts = [f"{view.id}  {view.state}", f"{view.gpu or '?'} at {_money(view.dph)}/hr",
             f"spent {_money(view.cost_usd)}"]
    if view.live:
        parts.append(f"idle stop after {view.idle_minutes:g} min, ends by "
                     f"{time.strftime('%H:%M', time.localtime(view.deadline))}")
        if remote is not None and remote.idle_s is not None and remote.state.value == "ready":
            parts.append(f"idle {remote.idle_s / 60:.0f} min")
    if view.url:
        parts.append(view.url)
    if view.error:
        parts.append(view.error)
    return " · ".join(parts)


# ---- the tunnel keeper ------------------------------------------------------------------------
def _spawn_keeper(ctx: typer.Context, session_id: str, timeout: float = 60.0) -> TunnelKeeper:
    """The session's tunnel keeper, started when there is none."""
    app_ = ctx_obj(ctx).app
    found = app_.sessions.keeper(session_id)
    if found:
        return found
    log_dir = app_.settings.home / "sessions"
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "comfy_lora_cloud.cli.main", "--home", str(app_.settings.home), "comfy", "tunnel",
           session_id]
    with open(log_dir / f"{session_id}.tunnel.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = app_.sessions.keeper(session_id)
        if found and found.pid == proc.pid:
            return found
        if proc.poll() is not None:
            tail = (log_dir / f"{session_id}.tunnel.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise TunnelError(f"the tunnel could not be opened: {tail[0] if tail else 'see the tunnel log'}")
        time.sleep(0.1)
    proc.terminate()
    raise TunnelError(f"the tunnel to session {session_id} did not open within {timeout:g} s")


def _stop_keeper(ctx: typer.Context, session_id: str) -> None:
    sessions = ctx_obj(ctx).app.sessions
    found = sessions.keeper(session_id)
    if found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(found.pid, signal.SIGTERM)  # it would see the ended session within seconds anyway
    sessions.record_keeper(session_id, None)


@app.command("tunnel", hidden=True)
@handle_errors
def tunnel(ctx: typer.Context, session_id: str) -> None:
    """Hold a tunnel to the session's ComfyUI until the session ends (started by start/open)."""
    sessions = ctx_obj(ctx).app.sessions
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__("now", True))

    async def hold() -> None:
        import asyncio

        tunnel = await sessions.tunnel(session_id)
        sessions.record_keeper(session_id, os.getpid(), tunnel.local_port)
        print(f"tunnel {tunnel.url} -> session {session_id}", flush=True)
        try:
            while not stopping["now"]:
                view = await sessions.get(session_id)
                if not view.live:
                    print(f"session {session_id} ended ({view.state})", flush=True)
                    return
                if tunnel.state in ("failed", "closed"):
                    raise TunnelError(f"the tunnel failed: {tunnel.last_error}")
                await asyncio.sleep(2.0)
        finally:
            current = sessions.keeper(session_id)
            if current and current.pid == os.getpid():
                sessions.record_keeper(session_id, None)

    run(hold())


# ---- the commands ------------------------------------------------------------------------------
@app.command("start")
@handle_errors
def start(
    ctx: typer.Context,
    gpu: Optional[str] = typer.Option(None, "--gpu", help="A GPU model (4090, a100, ...); default: the cheapest "
                                                          "offer with --vram GB."),
    vram: float = typer.Option(24.0, "--vram", help="GB of GPU memory the offer needs (when --gpu is not given)."),
    idle_minutes: float = typer.Option(DEFAULT_IDLE_MINUTES, "--idle-minutes",
                                       help="Destroy the instance after this many minutes without a prompt."),
    max_hours: Optional[float] = typer.Option(None, "--max-hours", help="Destroy it after this many hours "
                                                                         "(default: the session_max_hours setting, "
                                                                         "4; max_run_hours is for runs)."),
    precision: str = typer.Option("fp8", "--precision", help="Flux weights: fp8 (24 GB cards) or fp16."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until ComfyUI answers (and open the tunnel)."),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds to wait for ComfyUI before giving up "
                                                             "(the instance is then destroyed)."),
) -> None:
    """Rent a GPU running ComfyUI (with the six packs of the plan and LoRA Cloud) and open a tunnel
    to it. Your LoRAs are synced onto it; every image it saves lands in the bucket's outputs/."""
    from ..service.sessions import SessionRequest

    c = ctx_obj(ctx)
    req = SessionRequest(gpu=gpu, vram_gb=vram, idle_minutes=idle_minutes, max_hours=max_hours, precision=precision)
    started = run(c.app.sessions.start(req))
    view, data = started.view, started.to_dict()
    if not c.json_output:
        err_console.print(("attached to " if started.attached else "rented ") + _line(view), markup=False)
    if wait and view.live:
        def status(v: SessionView, message: str) -> None:
            if not c.json_output:
                err_console.print(f"  {v.state}: {message or ''}", markup=False)

        view = run(c.app.sessions.wait_ready(view.id, timeout=timeout, on_status=status))
        keeper = _spawn_keeper(ctx, view.id)
        view = replace(view, url=keeper.url)
        data = {**view.to_dict(), "tunnel_pid": keeper.pid}
    emit(ctx, data, lambda _d: out_console.print(_line(view), markup=False))


@app.command("status")
@handle_errors
def status(ctx: typer.Context, session_id: Optional[str] = typer.Argument(None, help="Default: the live one."),
           all_: bool = typer.Option(False, "--all", help="Every recorded session, newest first.")) -> None:
    """The session: state, GPU, $/hr, spent so far (live), idle time, its URL when a tunnel is open."""
    sessions = ctx_obj(ctx).app.sessions

    def with_keeper(v: SessionView) -> SessionView:
        keeper = sessions.keeper(v.id) if v.live else None
        return replace(v, url=keeper.url if keeper else None)

    if all_:
        views = [with_keeper(v) for v in run(sessions.list())]
        emit(ctx, [v.to_dict() for v in views], lambda _vs: [out_console.print(_line(v), markup=False) for v in views]
             or out_console.print("no sessions"))
        return
    if session_id is None:
        view = run(sessions.current())
        if view is None:
            emit(ctx, None, "no session is running (lora-cloud comfy start)")
            return
    else:
        view = run(sessions.get(session_id))
    shown = with_keeper(view)
    emit(ctx, shown.to_dict(), lambda _d: out_console.print(_line(shown), markup=False))


@app.command("open")
@handle_errors
def open_(ctx: typer.Context, session_id: Optional[str] = typer.Argument(None, help="Default: the live one."),
          browser: bool = typer.Option(True, "--browser/--no-browser", help="Open it in a browser when there is one.")) -> None:
    """Print the local URL of the session's ComfyUI (through the SSH tunnel) and open a browser."""
    c = ctx_obj(ctx)
    view = run(c.app.sessions.get(session_id))
    if not view.live:
        raise ConfigError(f"session {view.id} has ended ({view.state})")
    if view.state != "ready":
        view = run(c.app.sessions.wait_ready(view.id))
    keeper = _spawn_keeper(ctx, view.id)
    data = {"id": view.id, "url": keeper.url, "tunnel_pid": keeper.pid}
    opened = False
    if browser and not c.json_output and sys.stdout.isatty():
        import webbrowser

        with contextlib.suppress(Exception):
            opened = webbrowser.open(keeper.url, new=2)
    emit(ctx, {**data, "browser": opened}, lambda d: out_console.print(d["url"], markup=False))


@app.command("run")
@handle_errors
def run_(
    ctx: typer.Context,
    workflow: str = typer.Argument(..., help="A workflow .json file as ComfyUI saves it (or in its API format, "
                                             "Workflow > Export (API)); or a template name (basic_txt2img, "
                                             "lora_comparison, ...)."),
    lora: Optional[str] = typer.Option(None, "--lora", help="A LoRA in your bucket: put in the workflow's LoRA "
                                                            "loader(s) and fetched onto the session first."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The positive prompt."),
    sets: list[str] = typer.Option([], "--set", help="NODE.INPUT=VALUE (node id, title or class type), repeatable."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Every sampler's seed."),
    out: Path = typer.Option(Path("outputs"), "--out", "-o", help="Where the images are written."),
    session_id: Optional[str] = typer.Option(None, "--session", help="Default: the live session."),
) -> None:
    """Queue a workflow on the session's ComfyUI through the tunnel, show its progress and download
    its images. The images also land in the bucket (outputs/<session>/). A workflow saved from the
    canvas is converted against the remote ComfyUI's node definitions. A dropped link is
    reconnected; Ctrl-C interrupts the prompt on the remote side."""
    from ..service.templates import load_workflow, resolve_workflow

    c = ctx_obj(ctx)
    path = Path(workflow).expanduser()
    if path.is_file():
        wf = resolve_workflow(load_workflow(path), lora=lora, prompt=prompt, seed=seed, sets=sets)
    elif path.suffix == ".json" or "/" in workflow:
        raise ConfigError(f"no workflow file {workflow!r} (give a .json file saved from ComfyUI, or a template name)")
    else:  # one of the pack's templates, by name
        wf = resolve_workflow(workflow, lora=lora, prompt=prompt, seed=seed, sets=sets)
    bar = _progress_bar(c.json_output)

    def progress(value: int, maximum: int, node: str | None) -> None:
        bar(value, maximum, node)

    result = run(c.app.sessions.generate(wf, session_id=session_id, lora=lora, out_dir=out, progress=progress))
    bar(None, None, None)
    if result.ignored and not c.json_output:
        err_console.print("left out (the remote ComfyUI lacks them, nothing needs them): "
                          + ", ".join(result.ignored), markup=False)
    data = {k: v for k, v in result.to_dict().items() if k != "images"}
    data["images"] = [img.path for img in result.images]  # where they were written, not their bytes
    emit(ctx, data, lambda _d: [out_console.print(img.path, markup=False) for img in result.images]
         or err_console.print("the workflow ran but saved no images"))


def _progress_bar(quiet: bool):
    """(value, max, node) -> a line on stderr when it is a terminal; ``(None, ...)`` ends it."""
    if quiet or not err_console.is_terminal:
        return lambda value, maximum, node: None
    from rich.progress import BarColumn, Progress, TextColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        console=err_console, transient=True)
    task = {"id": None}

    def update(value: int | None, maximum: int | None, node: str | None) -> None:
        if value is None:
            progress.stop()
            return
        if task["id"] is None:
            progress.start()
            task["id"] = progress.add_task("generating", total=maximum)
        progress.update(task["id"], completed=value, total=maximum, description=f"node {node}")

    return update


@app.command("stop")
@handle_errors
def stop(ctx: typer.Context, session_id: Optional[str] = typer.Argument(None, help="Default: the live one.")) -> None:
    """Destroy the session's instance: billing ends. Its outputs stay in the bucket."""
    c = ctx_obj(ctx)
    stopped = run(c.app.sessions.stop(session_id))
    view = stopped.view
    _stop_keeper(ctx, view.id)
    emit(ctx, stopped.to_dict(), lambda _d: out_console.print(
        f"stopped {view.id}: destroyed {', '.join(stopped.destroyed_instances) or 'nothing (already gone)'}; "
        f"spent {_money(view.cost_usd)}", markup=False))
