"""`lora-cloud train`: plan a run (configs + estimate, nothing rented) and follow runs' status."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..errors import ConfigError
from .common import (LIST_PAGE, ctx_obj, emit, err_console, finite, handle_errors, out_console, page_options,
                     report_page, report_problems, run)
from .train_outputs import exit_for, follow_run, hints_for_end, next_steps

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from ..service.runs import RunHistory

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS


MAX_SET_CHARS = 10_000  # a --set value is a number, a word or a short list; more is a mistake


def parse_set(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are TOML (``3e-4``, ``true``, ``[1,2]``, ``"x"``), else a string.
    The numbers are range-checked where the preset is resolved (``training/presets.py``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item[:80]!r}")
        if len(raw) > MAX_SET_CHARS:
            raise ConfigError(f"--set {key.strip()[:80]}: the value is {len(raw)} characters (at most {MAX_SET_CHARS})")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        except (ValueError, RecursionError):  # an integer past Python's 4300 digits, lists nested too deep
            raise ConfigError(f"--set {key.strip()[:80]}: the value is not a number or a list we can read") from None
        out[key.strip()] = value
    return out


@app.command("plan")
@handle_errors
def plan(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name in the bucket."),
    lora_type: str = typer.Option("character", "--type", "-t", help="character, style or concept."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU to estimate for (4090, a100, h100, L40S, ...; "
                                                          "default: the picker's choice from the bundled offer book)."),
    vram: Optional[float] = typer.Option(None, "--vram", min=1, max=1024, callback=finite,
                                         help="GPU memory in GB (default: the GPU's); picks the tier."),
    images: Optional[int] = typer.Option(None, "--images", min=1, max=100_000,
                                         help="Image count (default: counted in the bucket)."),
    trigger: Optional[str] = typer.Option(None, "--trigger", help="Trigger word (default: the dataset's)."),
    name: Optional[str] = typer.Option(None, "--name", help="LoRA name (default: the dataset name)."),
    sets: list[str] = typer.Option([], "--set", help="Override a preset value: key=value, section.key=value."),
    dph: Optional[float] = typer.Option(None, "--dph", min=0.001, callback=finite,
                                        help="Price the estimate at this $/hr (default: the bundled offer book)."),
    live: bool = typer.Option(False, "--live", help="Also ask vast.ai for the offer the picker would rent now "
                                                    "(needs vast_api_key); still rents nothing."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for train.toml, dataset.toml, prompts.txt, spec.json."),
) -> None:
    """Write kohya's configs for a run and print its steps, time and cost. Rents nothing."""
    planned = run(ctx_obj(ctx).app.runs.plan(dataset=dataset, lora_type=lora_type, gpu=gpu, out=out, vram=vram,
                                             images=images, trigger=trigger, name=name, overrides=parse_set(sets),
                                             dph=dph, live=live))

    def human(_: dict[str, Any]) -> None:
        p, e = planned.steps, planned.estimate
        out_console.print(f"{planned.preset} LoRA, {planned.tier_gb} GB tier: {p.images} images x {p.repeats} "
                          f"repeats, batch {p.batch_size}, {p.epochs} epochs of {p.steps_per_epoch} steps "
                          f"= {p.total_steps} steps", markup=False)
        out_console.print(f"on {e.gpu}: ~{e.sec_per_step} s/step, {e.samples} sample images, "
                          f"~{e.hours} h, ~${e.usd} at ${e.dph:.3f}/hr (estimate; priced from "
                          f"{planned.priced_from})", markup=False)
        for label, path in planned.files.to_dict().items():
            if path:
                out_console.print(f"  {label:<8} {path}", markup=False)
        out_console.print(f"  command  {planned.command}", markup=False)
        checks = planned.checks
        if checks is not None:
            for line in checks.errors:
                out_console.print(f"ERROR   {line}", markup=False)
            for line in checks.warnings:
                out_console.print(f"warning {line}", markup=False)
            out_console.print(f"dataset {dataset!r}: " + ("ready to train" if checks.ok else
                                                          "NOT ready: train start would refuse it"), markup=False)
        if planned.offer is not None:
            out_console.print(planned.offer.explain(), markup=False)

    emit(ctx, planned.to_dict(), human)
    quoted = f'"{dataset}"' if " " in dataset else dataset
    next_steps(ctx, "set up storage and vast.ai (docs/setup.md), check them with: lora-cloud doctor",
               f"lora-cloud train start --dataset {quoted} --type {lora_type}"
               + (f" --trigger {trigger}" if trigger and " " not in trigger else ""))


@app.command("status")
@handle_errors
def status(
    ctx: typer.Context,
    run_id: Optional[str] = typer.Argument(None, metavar="[RUN]", help="Run id (default: every run in the bucket)."),
    events: int = typer.Option(10, "--events", min=0, max=100_000, help="How many recent events to show for one run."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing one run's progress until it ends."),
    interval: float = typer.Option(5.0, "--interval", min=0.01, max=3600, callback=finite,
                                   help="Seconds between reads with --follow."),
    offset: int = typer.Option(0, "--offset", min=0, help="Every run: skip this many (newest first)."),
    limit: int = typer.Option(LIST_PAGE, "--limit", min=1, max=1000, help="Every run: show at most this many."),
    everything: bool = typer.Option(False, "--all", help="Every run: show them all (reads every status)."),
) -> None:
    """The runs' live status, read from the bucket (works from any machine). Every run's comes a
    page at a time (--offset, --limit)."""
    runs = ctx_obj(ctx).app.runs
    if run_id and follow:
        _follow(ctx, run_id, interval)
        return
    if run_id:
        st = run(runs.status(run_id))
        recent = list(run(runs.events(run_id)).events[-events:]) if events else []
        attempts = run(ctx_obj(ctx).app.recovery.history(run_id))
        data = {"status": st.to_dict(), "events": recent, "attempts": attempts.to_dict()}

        def one(d: dict[str, Any]) -> None:
            _print_row(d["status"])
            if st.error:
                out_console.print(f"  error: {st.error}", markup=False)
            _print_attempts(attempts)
            for e in recent:
                _print_event(e)

        emit(ctx, data, one)
        next_steps(ctx, *hints_for_end(data["status"]))
        exit_for(st.state.value)
        return
    found = run(runs.status_listing(*page_options(offset, limit, everything)))
    rows = [st.to_dict() for st in found.statuses]
    report_problems(found.problems)
    report_page(found, "runs", len(rows))

    def many(rs: list[dict[str, Any]]) -> None:
        if not rs:
            out_console.print("no runs yet", markup=False)
        for r in rs:
            _print_row(r)

    emit(ctx, rows, many)


def _follow(ctx: typer.Context, run_id: str, interval: float) -> None:
    """Follow one run until it ends, here or in the bucket (train_outputs.follow_run)."""
    follow_run(ctx, run_id, interval, _print_event, _print_row)


def _print_event(e: dict[str, Any]) -> None:
    t = time.strftime("%H:%M:%S", time.localtime(e.get("t", 0)))
    rest = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "kind"))
    out_console.print(f"{t} {e.get('kind')} {rest}", markup=False)


def _print_attempts(h: RunHistory) -> None:
    """One line per attempt (instance, GPU, $/hr, steps, cost), then the time lost and the total;
    nothing for a run that ran on one instance without a preemption."""
    if len(h.attempts) < 2 and not h.preemptions:
        return
    for a in h.attempts:
        kind = "" if a.interruptible is None else (" interruptible" if a.interruptible else " on-demand")
        dph = f" ${a.dph:.3f}/hr" if a.dph is not None else ""
        steps = f"steps {a.step_start}-{a.step_end if a.step_end is not None else '?'}"
        cost = f" ${a.cost_usd:.2f}" if a.cost_usd is not None else ""
        out_console.print(f"  attempt {a.n}: instance {a.instance_id or '?'} {a.gpu or '?'}{dph}"
                          f"{kind}, {steps}{cost}, {a.end}", markup=False)
    total = f", total ${h.total_usd:.2f}" if h.total_usd is not None else ""
    out_console.print(f"  {h.preemptions} preemption(s), {h.lost_s / 60:.1f} min lost "
                      f"({h.lost_steps} steps trained again){total}", markup=False)


def _print_row(s: dict[str, Any]) -> None:
    loss = f" loss {s['loss']:.3f}" if s.get("loss") is not None else ""
    eta = f" eta {int(s['eta_seconds'] // 60)} min" if s.get("eta_seconds") else ""
    lora = f" -> {s['lora']}" if s.get("lora") else ""
    spent = f" ${s['spent_usd']:.2f} so far" if s.get("spent_usd") is not None else ""
    out_console.print(f"{s['run_id']:<24} {s['state']:<10} step {s.get('step', 0)}/{s.get('total_steps', 0)}"
                      f"{loss}{eta}{spent}{lora}", markup=False)


@app.command("start")
@handle_errors
def start(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name in the bucket."),
    lora_type: str = typer.Option("character", "--type", "-t", help="character, style or concept."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Only this GPU model (4090, a100, h100, ...)."),
    vram: Optional[float] = typer.Option(None, "--vram", min=1, max=1024, callback=finite,
                                         help="GPU memory tier in GB (default: the GPU's, else 24)."),
    trigger: Optional[str] = typer.Option(None, "--trigger", help="Trigger word (default: the dataset's)."),
    name: Optional[str] = typer.Option(None, "--name", help="LoRA name (default: the dataset name)."),
    sets: list[str] = typer.Option([], "--set", help="Override a preset value: key=value, section.key=value."),
    provider_name: str = typer.Option("vast", "--provider", help="vast, or local (this machine's GPU)."),
    interruptible: bool = typer.Option(False, "--interruptible", help="Bid for a cheaper interruptible instance."),
    resume_wait: Optional[float] = typer.Option(
        None, "--resume-wait", help="Minutes to wait for a preempted instance to resume before moving the run "
                                    "(default: the preempt_wait_minutes setting)."),
    max_attempts: Optional[int] = typer.Option(
        None, "--max-attempts", help="Most instances this run may use before it fails (default: preempt_max_attempts)."),
    on_demand_after: Optional[int] = typer.Option(
        None, "--on-demand-after", help="Rent on-demand after this many preemptions, 0 = never "
                                        "(default: preempt_on_demand_after)."),
) -> None:
    """Rent a GPU and train. Launching the same dataset and settings again re-attaches to the live run.
    A preempted run resumes in place or moves to a new GPU from its last checkpoint (the guard does it)."""
    from ..service.runs import TrainRequest

    req = TrainRequest(dataset=dataset, lora_type=lora_type, lora_name=name, trigger=trigger, gpu=gpu, vram_gb=vram,
                       overrides=parse_set(sets), provider=provider_name, interruptible=interruptible,
                       resume_wait_minutes=resume_wait, max_attempts=max_attempts, on_demand_after=on_demand_after)
    result = run(ctx_obj(ctx).app.runs.start(req))
    data = result.to_dict()
    for line in result.warnings:  # the dataset checks' (they passed, with these remarks)
        err_console.print(f"warning: {line}", markup=False)
    if result.attached:
        emit(ctx, data, f"already running as {result.run_id} ({result.state}); follow it with: "
                        f"lora-cloud train status {result.run_id}")
        return
    cost = f", ~${result.expected_usd} expected" if result.expected_usd is not None else ""
    emit(ctx, data, f"started run {result.run_id} on {result.gpu} (instance {result.instance_id}, "
                    f"${result.dph:.3f}/hr{cost}); follow it with: lora-cloud train status {result.run_id}")
    next_steps(ctx, f"lora-cloud train status {result.run_id} --follow   (step, loss, ETA, $ so far)",
               f"lora-cloud train stop {result.run_id}   (if you change your mind: billing ends at once)")


@app.command("stop")
@handle_errors
def stop(ctx: typer.Context, run_id: str = typer.Argument(..., metavar="RUN", help="Run id.")) -> None:
    """Stop a run now: destroy its instances and mark it stopped (its last checkpoint stays in the bucket)."""
    stopped = run(ctx_obj(ctx).app.runs.stop(run_id))
    destroyed = ", ".join(stopped.destroyed_instances)
    emit(ctx, stopped.to_dict(), f"stopped run {run_id}" + (f" (instance {destroyed} destroyed)" if destroyed else ""))


from .train_outputs import register as _register_outputs  # noqa: E402  (logs, samples)

_register_outputs(app)
