"""Fault scenarios for the money the guard counts when its own records fail it (the leftovers
of issue 9): the month budget with a damaged ``state.db``, held to vast.ai's ``/charges/``.

Each row damages the store the way a full disk or a crash would, scripts the fake vast.ai's
``/charges/`` answer, and declares what the guard must do to every instance.
"""

from __future__ import annotations

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.providers.base import run_label

from .harness import World
from .registry import scenario
from .scenarios_guard import PRICEY, all_of, breach, no_verdicts, problem


def damage_store(w: World) -> None:
    """Cut ``state.db`` short, as a full disk or a crash mid-copy would."""
    w.store.list_runs()  # every connection closed: the WAL is folded into state.db
    for extra in ("state.db-wal", "state.db-shm"):
        (w.home / extra).unlink(missing_ok=True)
    path = w.home / "state.db"
    path.write_bytes(path.read_bytes()[:1024])


def earlier_charge(w: World, usd: float, label: str, instance_id: int = 990001) -> dict:
    """A ``/charges/`` row for an instance destroyed earlier this month (no longer listed)."""
    return {"type": "instance", "source": f"instance-{instance_id}", "amount": usd, "start": w.now, "end": w.now,
            "description": f"RTX 4090 x1 instance {instance_id}", "metadata": {"label": label}}


def live_run(w: World, run_id: str, fate: str, why: str, **kwargs) -> str:
    iid = w.instance(run_id, fate, why, **kwargs)
    w.local_run(run_id, iid)
    w.status(run_id)
    if fate == "die":
        w.expect_end(run_id, RunState.FAILED)
    return iid


@scenario("db_damaged_month_from_charges", "state.db is damaged and this month's bill, as /charges/ shows it, is "
          "over max_month_usd (an instance destroyed earlier cost $6 of a $5 month)",
          budgets={"max_month_usd": 5.0},
          check=all_of(breach("max_month_usd", "spender"), problem("state_store", text="damaged"),
                       problem("budget", "month", "enforced from vast.ai's /charges/ ($6.")))
def _db_damaged_month_from_charges(w: World) -> None:
    w.treasure(["spender"])
    live_run(w, "spender", "die", "the month is over budget by the provider's bill; the store cannot say so")
    w.fake.call("charges", {"extra_rows": [earlier_charge(w, 6.0, run_label("earlier"))]})
    damage_store(w)


@scenario("db_damaged_month_counts_only_ours", "state.db is damaged; /charges/ bills $1000 for an instance that is "
          "not ours (the user's own machine): the month budget counts only our instances",
          budgets={"max_month_usd": 50.0},
          check=all_of(no_verdicts("max_month_usd"), problem("budget", "month", "enforced from vast.ai's /charges/ ($0.")))
def _db_damaged_month_counts_only_ours(w: World) -> None:
    w.treasure(["mine"])
    live_run(w, "mine", "keep", "a live run of ours; the $1000 is not ours")
    w.fake.call("charges", {"extra_rows": [earlier_charge(w, 1000.0, "my-own-jupyter-box", 990002)]})
    damage_store(w)


@scenario("db_damaged_and_charges_unavailable", "state.db is damaged and /charges/ answers 503 through every retry: "
          "the month budget cannot be checked (and says so), max $/hr still holds",
          budgets={"max_dph": 1.0},
          check=all_of(problem("budget", "month", "could not be read either"), breach("max_dph", "pricey")))
def _db_damaged_and_charges_unavailable(w: World) -> None:
    w.treasure(["pricey"])
    live_run(w, "pricey", "die", "above max_dph", gpu=PRICEY)
    w.fake.call("faults", {"n": 6, "status": 503, "path_contains": "/charges", "retry_after": 0.01})
    damage_store(w)


@scenario("db_damaged_charges_partial", "state.db is damaged and /charges/ paging never ends: the rows it did show "
          "($6 of a $5 month) are a lower bound, and already over budget",
          budgets={"max_month_usd": 5.0},
          check=all_of(breach("max_month_usd", "spender"), problem("charges", text="repeats"),
                       problem("budget", "month", "at least that much")))
def _db_damaged_charges_partial(w: World) -> None:
    w.treasure(["spender"])
    live_run(w, "spender", "die", "the part of the bill that could be read is over the month's budget")
    w.fake.call("charges", {"next_token": "same", "extra_rows": [earlier_charge(w, 6.0, run_label("earlier"))]})
    damage_store(w)
