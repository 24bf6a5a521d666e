"""`lora-cloud train`: plan a run (configs + estimate, nothing rented) and follow runs' status."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError, ObjectNotFound, StorageError
from ..models import Problem
from ..storage import layout
from .common import ctx_obj, emit, handle_errors, out_console, report_problems
from ..service.runs import provider_factory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

app = typer.Typer(help="Plan, start and stop training runs, and follow their progress.", no_args_is_help=True)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are TOML (``3e-4``, ``true``, ``[1,2]``, ``"x"``), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


@app.command("plan")
@handle_errors
def plan(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name in the bucket."),
    lora_type: str = typer.Option("character", "--type", "-t", help="character, style or concept."),
    gpu: str = typer.Option("RTX 4090", "--gpu", help="GPU to estimate for (4090, a100, h100, L40S, ...)."),
    vram: Optional[float] = typer.Option(None, "--vram", help="GPU memory in GB (default: the GPU's); picks the tier."),
    images: Optional[int] = typer.Option(None, "--images", help="Image count (default: counted in the bucket)."),
    trigger: Optional[str] = typer.Option(None, "--trigger", help="Trigger word (default: the dataset's)."),
    name: Optional[str] = typer.Option(None, "--name", help="LoRA name (default: the dataset name)."),
    sets: list[str] = typer.Option([], "--set", help="Override a preset value: key=value, section.key=value."),
    dph: Optional[float] = typer.Option(None, "--dph", help="Price the estimate at this $/hr."),
    live: bool = typer.Option(False, "--live", help="Also ask vast.ai for the offer the picker would rent now "
                                                    "(needs vast_api_key); still rents nothing."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for train.toml, dataset.toml, prompts.txt, spec.json."),
) -> None:
    """Write kohya's configs for a run and print its steps, time and cost. Rents nothing."""
    from ..training.estimate import estimate, resolve_gpu
    from ..training.kohya_config import TrainJob, format_command, write_configs
    from ..training.presets import load_preset, plan_steps
    from ..training.spec import RunSpec

    overrides = parse_set(sets)
    if images is None or trigger is None:
        from ..service.library import describe_dataset

        try:
            info = describe_dataset(ctx_obj(ctx).storage(), dataset)
        except ObjectNotFound:
            if images is None:
                raise ConfigError(f"no dataset {dataset!r} in the bucket: upload it or pass --images N") from None
            info = None
        images = info.images if images is None and info else images
        trigger = trigger if trigger is not None else (info.trigger if info else None)
    gpu_name, gpu_vram = resolve_gpu(gpu)
    preset = load_preset(lora_type, vram or gpu_vram, overrides)
    steps = plan_steps(preset, images or 0)
    spec = RunSpec(run_id="planned", dataset=dataset, lora_type=lora_type, lora_name=name or dataset,
                   trigger=trigger or "", vram_gb=vram or gpu_vram, overrides=overrides)
    job = TrainJob(preset=preset, plan=steps, output_name=spec.lora_name, trigger=spec.trigger)
    files = write_configs(job, out, config_dir=job.paths.config_dir)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1), "utf-8")
    est = estimate(preset, steps, gpu_name, dph)
    data = {
        "preset": preset.name, "tier_gb": preset.tier, "plan": steps.to_dict(), "estimate": est.to_dict(),
        "files": {"train": str(files.train_toml), "dataset": str(files.dataset_toml),
                  "prompts": str(files.prompts) if files.prompts else None, "spec": str(out / "spec.json")},
        "command": format_command(files.command), "prep": preset.prep,
    }
    if live:
        data["offer"] = _live_pick(ctx_obj(ctx).settings, preset, steps)

    def human(d: dict[str, Any]) -> None:
        p, e = d["plan"], d["estimate"]
        out_console.print(f"{preset.name} LoRA, {preset.tier} GB tier: {p['images']} images x {p['repeats']} repeats, "
                          f"batch {p['batch_size']}, {p['epochs']} epochs of {p['steps_per_epoch']} steps "
                          f"= {p['total_steps']} steps", markup=False)
        out_console.print(f"on {e['gpu']}: ~{e['sec_per_step']} s/step, {e['samples']} sample images, "
                          f"~{e['hours']} h, ~${e['usd']} at ${e['dph']}/hr (estimate)", markup=False)
        for label, path in d["files"].items():
            if path:
                out_console.print(f"  {label:<8} {path}", markup=False)
        out_console.print(f"  command  {d['command']}", markup=False)
        if d.get("offer"):
            out_console.print(d["offer"]["explanation"], markup=False)

    emit(ctx, data, human)


def _live_pick(settings: Any, preset: Any, steps: Any) -> dict[str, Any]:
    """The offer the picker would rent now for this plan (cheapest expected total)."""
    import asyncio

    from ..providers import pricing
    from ..providers.vast import VastProvider, client_from_settings

    job = pricing.Job(preset=preset.name, steps=steps.total_steps * steps.batch_size, tier=preset.tier,
                      max_dph=settings.max_dph, resolution=int(preset.dataset.get("resolution", 1024)))

    async def pick() -> dict[str, Any]:
        async with client_from_settings(settings) as client:
            return (await pricing.pick_offer(VastProvider(client), job)).to_dict()

    return asyncio.run(pick())


@app.command("status")
@handle_errors
def status(
    ctx: typer.Context,
    run: Optional[str] = typer.Argument(None, help="Run id (default: every run in the bucket)."),
    events: int = typer.Option(10, "--events", help="How many recent events to show for one run."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing one run's progress until it ends."),
    interval: float = typer.Option(15.0, "--interval", help="Seconds between reads with --follow."),
) -> None:
    """The runs' live status, read from the bucket (works from any machine)."""
    from ..training.status import read_events, read_status

    storage = ctx_obj(ctx).storage()
    if run and follow:
        _follow(ctx, storage, run, interval)
        return
    if run:
        st = read_status(storage, run)
        if st is None:
            raise ObjectNotFound(f"run {run!r} has no status in {storage.url} yet")
        data = {"status": st.to_dict(), "events": read_events(storage, run)[-events:] if events else []}

        def one(d: dict[str, Any]) -> None:
            _print_row(d["status"])
            if d["status"].get("error"):
                out_console.print(f"  error: {d['status']['error']}", markup=False)
            for e in d["events"]:
                t = time.strftime("%H:%M:%S", time.localtime(e.get("t", 0)))
                rest = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "kind"))
                out_console.print(f"  {t} {e.get('kind')} {rest}", markup=False)

        emit(ctx, data, one)
        return
    rows, problems = [], []
    for prefix in storage.list(layout.RUNS, delimiter="/").prefixes:
        try:  # bucket content is untrusted: one bad run is reported, not fatal to the list
            st = read_status(storage, prefix[len(layout.RUNS):].rstrip("/"))
        except (ConfigError, StorageError) as exc:
            problems.append(Problem.of(prefix, exc))
            continue
        if st is not None:
            rows.append(st.to_dict())
    report_problems(problems)
    rows.sort(key=lambda r: r["updated_at"], reverse=True)

    def many(rs: list[dict[str, Any]]) -> None:
        if not rs:
            out_console.print("no runs yet", markup=False)
        for r in rs:
            _print_row(r)

    emit(ctx, rows, many)


def _follow(ctx: typer.Context, storage: Any, run: str, interval: float) -> None:
    """Print each new event and the status line until the run reaches a final state."""
    from ..training.status import read_events, read_status

    seen = 0
    while True:
        st = read_status(storage, run)
        new = read_events(storage, run, since=seen)
        seen += len(new)
        for e in new:
            emit(ctx, e, lambda e: out_console.print(
                f"{time.strftime('%H:%M:%S', time.localtime(e.get('t', 0)))} {e.get('kind')} "
                + " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "kind")), markup=False))
        if st is not None and st.state.is_terminal:
            emit(ctx, st.to_dict(), _print_row)
            return
        if st is not None and not ctx_obj(ctx).json_output:
            _print_row(st.to_dict())
        time.sleep(interval)


def _print_row(s: dict[str, Any]) -> None:
    loss = f" loss {s['loss']:.3f}" if s.get("loss") is not None else ""
    eta = f" eta {int(s['eta_seconds'] // 60)} min" if s.get("eta_seconds") else ""
    lora = f" -> {s['lora']}" if s.get("lora") else ""
    out_console.print(f"{s['run_id']:<24} {s['state']:<10} step {s['step']}/{s['total_steps']}{loss}{eta}{lora}",
                      markup=False)


@app.command("start")
@handle_errors
def start(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name in the bucket."),
    lora_type: str = typer.Option("character", "--type", "-t", help="character, style or concept."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Only this GPU model (4090, a100, h100, ...)."),
    vram: Optional[float] = typer.Option(None, "--vram", help="GPU memory tier in GB (default: the GPU's, else 24)."),
    trigger: Optional[str] = typer.Option(None, "--trigger", help="Trigger word (default: the dataset's)."),
    name: Optional[str] = typer.Option(None, "--name", help="LoRA name (default: the dataset name)."),
    sets: list[str] = typer.Option([], "--set", help="Override a preset value: key=value, section.key=value."),
    provider_name: str = typer.Option("vast", "--provider", help="vast, or local (this machine's GPU)."),
    interruptible: bool = typer.Option(False, "--interruptible", help="Bid for a cheaper interruptible instance."),
) -> None:
    """Rent a GPU and train. Launching the same dataset and settings again re-attaches to the live run."""
    import asyncio

    from ..service.runs import TrainRequest, start_run

    cli = ctx_obj(ctx)
    req = TrainRequest(dataset=dataset, lora_type=lora_type, lora_name=name, trigger=trigger, gpu=gpu, vram_gb=vram,
                       overrides=parse_set(sets), provider=provider_name, interruptible=interruptible)
    result = asyncio.run(start_run(req, settings=cli.settings, storage=cli.storage(), state=cli.state()))
    data = result.to_dict()
    if result.attached:
        emit(ctx, data, f"already running as {result.run_id} ({result.state}); follow it with: "
                        f"lora-cloud train status {result.run_id}")
        return
    cost = f", ~${result.expected_usd} expected" if result.expected_usd is not None else ""
    emit(ctx, data, f"started run {result.run_id} on {result.gpu} (instance {result.instance_id}, "
                    f"${result.dph:.3f}/hr{cost}); follow it with: lora-cloud train status {result.run_id}")


@app.command("stop")
@handle_errors
def stop(ctx: typer.Context, run: str = typer.Argument(..., help="Run id.")) -> None:
    """Stop a run now: destroy its instance (its last checkpoint stays in the bucket)."""
    import asyncio

    from ..models import RunState
    from ..service.runs import mark_stopped_in_bucket

    cli = ctx_obj(ctx)
    settings, storage, state = cli.settings, cli.storage(), cli.state()
    record = state.get_run(run)
    if record is None:
        raise ObjectNotFound(f"no run {run!r} started from this machine")
    destroyed = False
    if record.instance_id:
        async def destroy() -> bool:
            async with provider_factory(record.provider, settings)() as provider:
                return await provider.destroy(record.instance_id)

        destroyed = asyncio.run(destroy())
        state.mark_instance_destroyed(record.provider, record.instance_id)
    if not record.state.is_terminal:
        state.update_run(run, state=RunState.STOPPED)
        mark_stopped_in_bucket(storage, run)
    emit(ctx, {"run_id": run, "instance_id": record.instance_id, "destroyed": destroyed},
         f"stopped run {run}" + (f" (instance {record.instance_id} destroyed)" if destroyed else ""))
