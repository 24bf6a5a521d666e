"""`lora-cloud instances`: our labelled vast.ai instances: list, logs, stop, destroy."""

from __future__ import annotations

import asyncio

import typer

from ..providers.base import LABEL_PREFIX
from ..providers.vast import VastProvider, client_from_settings
from .common import confirm_or_abort, ctx_obj, emit, handle_errors, out_console

app = typer.Typer(help="List and manage the instances LoRA Cloud rented.", no_args_is_help=True)


def _run(ctx: typer.Context, action):
    settings = ctx_obj(ctx).settings

    async def go():
        async with client_from_settings(settings) as client:
            return await action(VastProvider(client))

    return asyncio.run(go())


@app.command("list")
@handle_errors
def list_(ctx: typer.Context, all_: bool = typer.Option(False, "--all", help="Include instances without our label.")) -> None:
    """Live instances with their state, price and run."""
    instances = _run(ctx, lambda p: p.list("" if all_ else LABEL_PREFIX))
    rows = [{k: v for k, v in i.to_dict().items() if k != "raw"} for i in instances]

    def human(data: list) -> None:
        if not data:
            out_console.print("no instances")
        for r in data:
            ssh = f"{r['ssh_host']}:{r['ssh_port']}" if r["ssh_port"] else "-"
            out_console.print(f"{r['id']:>10}  {r['state']:<9} {r['gpu_name']:<14} ${r['dph_total']:.3f}/hr  "
                              f"run={r['run_id'] or '-'}  ssh={ssh}  {r['status_msg']}", markup=False)

    emit(ctx, rows, human)


@app.command("logs")
@handle_errors
def logs(ctx: typer.Context, instance_id: str, tail: int = typer.Option(200, help="Lines to show.")) -> None:
    """The container's recent log lines."""
    text = _run(ctx, lambda p: p.logs(instance_id, tail))
    emit(ctx, {"id": instance_id, "logs": text}, lambda d: out_console.print(d["logs"], markup=False, end=""))


@app.command("stop")
@handle_errors
def stop(ctx: typer.Context, instance_id: str) -> None:
    """Stop (the GPU is released; the disk stays and keeps billing storage)."""

    async def action(p: VastProvider):
        await p.stop(instance_id)
        return await p.get(instance_id)

    inst = _run(ctx, action)
    emit(ctx, {"id": instance_id, "state": inst.state.value if inst else "gone"}, f"stopped {instance_id}")


@app.command("destroy")
@handle_errors
def destroy(ctx: typer.Context, instance_id: str,
            yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Destroy (all billing stops; the instance's disk is deleted). Confirmed by reading it back."""
    confirm_or_abort(ctx, f"Destroy instance {instance_id} and delete its disk?", yes)
    existed = _run(ctx, lambda p: p.destroy(instance_id))
    emit(ctx, {"id": instance_id, "destroyed": True, "existed": existed}, f"destroyed {instance_id}")


@app.command("reconcile")
@handle_errors
def reconcile(
    ctx: typer.Context,
    grace: float = typer.Option(120.0, help="Seconds an unowned instance may live (a launch in progress)."),
) -> None:
    """One guard pass: destroy our labelled instances that no live run owns, end runs whose
    instance vanished, book costs (reconciled with vast.ai's charges) and enforce the budgets.
    ComfyUI with the pack loaded does this every 30 s; run it from cron if you only use the CLI.
    Records that cannot be read are skipped and listed as problems; the exit code is 4 when the
    instances could not be listed (nothing was checked)."""
    from ..errors import LoraCloudError, StorageError
    from ..service.budgets import Budgets
    from ..service.guard import Guard
    from ..storage.base import UnavailableStorage

    obj = ctx_obj(ctx)
    budgets = Budgets.from_settings(obj.settings)
    try:
        storage = obj.storage()
    except LoraCloudError as exc:  # the budgets still hold without a bucket
        storage = UnavailableStorage(obj.settings.storage_url, StorageError(exc.message))
    state = obj.state()
    result = _run(ctx, lambda p: Guard(p, state, budgets, storage=storage, grace_s=grace).run_once())

    def human(d: dict) -> None:
        r = d["reconcile"]
        out_console.print(f"owned {len(r['owned'])}, adopted {len(r['adopted'])}, destroyed {len(r['destroyed'])}, "
                          f"waiting {len(r['waiting'])}, kept in doubt {len(r['doubt'])}, lost runs "
                          f"{len(r['lost_runs'])}", markup=False)
        for iid in r["destroyed"]:
            out_console.print(f"destroyed {iid}: {r['why'].get(iid, '')}", markup=False)
        for v in d["budgets"]:
            out_console.print(f"{v['level']}: {v['message']}", markup=False)
        for p in d["problems"]:
            out_console.print(f"problem ({p['kind']}): {p['message']}", markup=False)

    emit(ctx, result, human)
    if not result["ok"]:
        raise typer.Exit(4)
