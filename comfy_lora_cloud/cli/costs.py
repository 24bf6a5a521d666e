"""`lora-cloud costs`: spend today, this month and per run, from the local ledger.

Unless ``--offline``, the ledger is brought up to date first: our instances are listed and
accrued, and the provider's charges are booked against the estimate.
"""

from __future__ import annotations

import asyncio
import time

import typer

from ..service.budgets import Budgets
from ..service.costs import CostLedger
from .common import ctx_obj, emit, handle_errors, out_console

app = typer.Typer(help="What LoRA Cloud has spent: today, this month, per run.")


@app.callback(invoke_without_command=True)
@handle_errors
def costs(ctx: typer.Context, offline: bool = typer.Option(False, help="Do not ask vast.ai; ledger only.")) -> None:
    """Print spend against the budgets."""
    obj = ctx_obj(ctx)
    state = obj.state()
    ledger = CostLedger(state)
    credit = None
    if not offline:
        credit = asyncio.run(_refresh(obj.settings, state, ledger))
    data = ledger.summary()
    data["budgets"] = Budgets.from_settings(obj.settings).to_dict()
    data["credit_usd"] = credit

    def human(d: dict) -> None:
        b = d["budgets"]
        out_console.print(f"today       ${d['today_usd']:.2f}", markup=False)
        out_console.print(f"this month  ${d['month_usd']:.2f} of ${b['max_month_usd']:g}", markup=False)
        for run, usd in d["per_run_usd"].items():
            out_console.print(f"  run {run}: ${usd:.2f} (max ${b['max_run_usd']:g})", markup=False)
        if d["credit_usd"] is not None:
            out_console.print(f"vast.ai credit ${d['credit_usd']:.2f}", markup=False)

    emit(ctx, data, human)


async def _refresh(settings, state, ledger: CostLedger) -> float | None:
    from ..providers.vast import VastProvider, client_from_settings

    async with client_from_settings(settings) as client:
        provider = VastProvider(client)
        instances = await provider.list()
        now = time.time()
        await asyncio.to_thread(ledger.accrue, instances, now)
        for inst in instances:
            await asyncio.to_thread(state.put_instance, inst, inst.run_id)
        rows = await asyncio.to_thread(state.list_instances, include_destroyed=True)
        charges = await client.charges(now - 32 * 86400, now)
        await asyncio.to_thread(ledger.reconcile_charges, charges, {r["id"]: r["run_id"] for r in rows}, now)
        return (await client.current_user()).get("credit")
