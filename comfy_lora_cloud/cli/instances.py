"""`lora-cloud instances`: our labelled vast.ai instances: list, logs, stop, destroy, reconcile."""

from __future__ import annotations

import typer

from .common import (EXIT_DAMAGED_HOME, confirm_or_abort, ctx_obj, emit, finite, handle_errors, out_console,
                     report_damaged_home, run)

app = typer.Typer(no_args_is_help=True)  # its help: cli/main.py NOUNS


@app.command("list")
@handle_errors
def list_(ctx: typer.Context, all_: bool = typer.Option(False, "--all", help="Include instances without our label.")) -> None:
    """Live instances with their state, price and run, as vast.ai lists them now."""
    instances = run(ctx_obj(ctx).app.instances.on_provider(everything=all_))
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
def logs(ctx: typer.Context, instance_id: str,
         tail: int = typer.Option(200, min=1, max=5000, help="Lines to show.")) -> None:
    """The container's recent log lines (ours only; secrets masked)."""
    found = run(ctx_obj(ctx).app.instances.logs(instance_id, tail))
    emit(ctx, found.to_dict(), lambda _d: out_console.print(found.logs, markup=False, end=""))


@app.command("stop")
@handle_errors
def stop(ctx: typer.Context, instance_id: str) -> None:
    """Stop (the GPU is released; the disk stays and keeps billing storage)."""
    stopped = run(ctx_obj(ctx).app.instances.stop(instance_id))
    emit(ctx, stopped.to_dict(), f"stopped {instance_id} ({stopped.state})")


@app.command("destroy")
@handle_errors
def destroy(ctx: typer.Context, instance_id: str,
            yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Destroy one of our instances (all billing stops; its disk is deleted). Confirmed by reading it
    back. An id that is unknown or not ours is refused."""
    confirm_or_abort(ctx, f"Destroy instance {instance_id} and delete its disk?", yes)
    done = run(ctx_obj(ctx).app.instances.destroy(instance_id))
    emit(ctx, done.to_dict(), f"destroyed {instance_id}" if done.existed else f"{instance_id} was already gone")


@app.command("reconcile")
@handle_errors
def reconcile(
    ctx: typer.Context,
    grace: float = typer.Option(120.0, min=0, max=86_400, callback=finite,
                                help="Seconds an unowned instance may live (a launch in progress)."),
) -> None:
    """One guard pass, the same one ComfyUI runs every 30 s: destroy our labelled instances that no
    live run owns (runs live from another machine are protected), end runs whose instance
    vanished, book costs (reconciled with vast.ai's charges), enforce the budgets, and resume or
    move preempted runs (the preempt_* settings). Run it from cron if you only use the CLI.
    Records that cannot be read are skipped and listed as problems; the exit code is 4 when the
    instances could not be listed (nothing was checked). A damaged home does not stop it: a
    settings file that cannot be read gives way to its last good copy (else the built-in limits)
    and a damaged state store is set aside and rebuilt; the pass runs, names the problem on
    stderr and exits 9."""
    result = run(ctx_obj(ctx).use_last_good().guard_pass(grace_s=grace))

    def human(_d: dict) -> None:
        r = result.reconcile
        out_console.print(f"owned {len(r.owned)}, adopted {len(r.adopted)}, destroyed {len(r.destroyed)}, "
                          f"waiting {len(r.waiting)}, kept in doubt {len(r.doubt)}, lost runs "
                          f"{len(r.lost_runs)}", markup=False)
        for iid in r.destroyed:
            out_console.print(f"destroyed {iid}: {r.why.get(iid, '')}", markup=False)
        rec = result.recovery
        if rec is not None:
            for what in ("preempted", "waiting", "resumed", "gave_up", "ended"):
                for run_id in getattr(rec, what):
                    out_console.print(f"preemption: run {run_id} {what.replace('_', ' ')}", markup=False)
            for run_id, iid in rec.relaunched.items():
                out_console.print(f"preemption: run {run_id} moved to instance {iid}", markup=False)
        for v in result.budgets:
            out_console.print(f"{v.level}: {v.message}", markup=False)
        for p in result.problems:
            out_console.print(f"problem ({p.kind}): {p.message}", markup=False)

    emit(ctx, result.to_dict(), human)
    damaged = report_damaged_home(result.problems)
    if not result.ok:
        raise typer.Exit(4)
    if damaged:
        raise typer.Exit(EXIT_DAMAGED_HOME)
