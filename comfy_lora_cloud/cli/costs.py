"""`lora-cloud costs`: spend today, this month and per run, from the local ledger.

Unless ``--offline``, the ledger is brought up to date first: our instances are listed and
accrued, and the provider's charges are booked against the estimate.
"""

from __future__ import annotations

import typer

from .common import ctx_obj, emit, handle_errors, out_console, run

app = typer.Typer()  # its help: cli/main.py NOUNS


@app.callback(invoke_without_command=True)
@handle_errors
def costs(ctx: typer.Context, offline: bool = typer.Option(False, help="Do not ask vast.ai; ledger only.")) -> None:
    """Print spend against the budgets."""
    app_ = ctx_obj(ctx).app
    credit = None if offline else run(app_.costs.refresh())
    spend = run(app_.costs.summary())

    def human(_d: dict) -> None:
        b = spend.budgets
        out_console.print(f"today       ${spend.today_usd:.2f}", markup=False)
        out_console.print(f"this month  ${spend.month_usd:.2f} of ${b.max_month_usd:g}", markup=False)
        for run_id, usd in spend.per_run_usd.items():
            out_console.print(f"  run {run_id}: ${usd:.2f} (max ${b.max_run_usd:g})", markup=False)
        for s in spend.suspect_charges:  # service/money/costs.py:cap_charges
            out_console.print(f"suspect: {s['message']}", markup=False)
        for message in spend.corrupt_lines:  # service/money/costs.py:CostLedger.lines
            out_console.print(f"not counted: {message}", markup=False)
        if credit is not None:
            out_console.print(f"vast.ai credit ${credit:.2f}", markup=False)

    emit(ctx, {**spend.to_dict(), "credit_usd": credit}, human)
