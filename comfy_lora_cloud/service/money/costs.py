"""The cost ledger: what each of our instances has cost, today, this month and per run.

Between two polls an instance is assumed to stay in the state it was seen in; each poll
(:meth:`CostLedger.accrue`) appends one ``gpu`` line (while running, at the GPU part of
``dph_total``) and one ``storage`` line (every state but offline) per instance, from the last
accrual to now. vast.ai bills per second on the same meters, so the estimate
is close; :meth:`CostLedger.reconcile_charges` then books the difference with the provider's
``/charges/`` as one ``charge`` line per instance, so the ledger converges on what was billed.

An instance is accrued from when this controller first saw it (``first_seen``, our clock), never
from the provider's start date: a provider clock hours behind ours must not book hours of spend
on a new instance. The charge rows come validated from the provider client
(``providers.vast.parse_charges``: a finite amount, never negative), the one place that checks
their shape; :func:`cap_charges` is the one place that checks their size against what the
instance could have billed.

A huge but finite charge (a $1e9 row for an instance at $0.40/h) is a bill no instance of ours
can run up: money comes first, so it is never ignored, but one absurd row must not destroy every
live run either. A row above :data:`CHARGE_MARGIN` times the instance's $/h over the row's span,
plus :data:`CHARGE_SLACK_USD` (bandwidth is billed outside ``dph_total``), is *suspect*: it is
counted at that most (never less than the rate could have billed), reported as a ``charges``
guard problem naming the row, and listed under ``suspect_charges`` in the cost summary
(``lora-cloud costs``, the sidebar) until the provider's bill no longer says it. An instance of
ours we know no rate for is held to ``max_dph``, or to :data:`UNKNOWN_DPH` (the most ``max_dph``
may be) over the whole window while that budget is off: no row is believed without a bound.

The ledger's own lines are held to the same rule when they are summed (:meth:`CostLedger.lines`):
a line that books more than its instance's $/h allows over the hours the line can cover
(:func:`line_cap`: its span, no longer than the instance has lived here plus the charges' window;
a point ``charge`` line, a correction, either way) is a corrupt row, a state.db written behind
our back or by a bug: it is handed to ``on_corrupt`` (the guard reports it) and never summed. So
every sum of money is finite and no larger than the rates allow: two lines of $1e308 must not
make a month of $inf that destroys every live instance.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, TYPE_CHECKING

from ...errors import CorruptRecord
from ...models import Cost, Instance, InstanceState
from ..home import OnCorrupt, StateStore
from .budgets import Budgets
from .views import CostSummary, LedgerSummary
from .charges import CHARGES_WINDOW_S, CHARGE_MARGIN, CHARGE_SLACK_USD, SuspectCharge, UNKNOWN_DPH, billed_by_instance, cap_charges, charge_span, our_charge

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger(__name__)

_CURSOR = "ledger:accrued:"  # kv key prefix -> epoch seconds accrued up to, per instance
_CHARGED = "ledger:charged:"  # kv key prefix -> provider-billed $ already booked, per instance


def _log(exc: CorruptRecord) -> None:
    log.warning("%s; accruing from first sight", exc.message)


def _log_line(exc: CorruptRecord) -> None:
    log.warning("skipped: %s", exc.message)


def _skip(on_corrupt: OnCorrupt | None) -> dict[str, OnCorrupt]:
    return {"on_corrupt": on_corrupt} if on_corrupt is not None else {}


def month_start(now: float) -> float:
    d = datetime.fromtimestamp(now)
    return datetime(d.year, d.month, 1).timestamp()


def day_start(now: float) -> float:
    d = datetime.fromtimestamp(now)
    return datetime(d.year, d.month, d.day).timestamp()


def usd_in(costs: Iterable[Cost], start: float, end: float) -> float:
    """Money inside ``[start, end]``: spans pro rata, point lines (charges) at their start."""
    total = 0.0
    for c in costs:
        if c.end > c.start:
            overlap = min(c.end, end) - max(c.start, start)
            if overlap > 0:  # the fraction first: usd * overlap of two huge finite numbers is inf
                total += c.usd * (overlap / (c.end - c.start))
        elif start <= c.start <= end:
            total += c.usd
    return total


def month_usd_from_charges(rows: Iterable[dict[str, Any]], now: float, listed: Iterable[str]) -> float:
    """This month's spend on our instances as ``/charges/`` billed it (rows as the provider
    client checked them): what the month budget is held to while the ledger cannot be read.
    Our instances are those listed now and those whose row carries our label; a row's amount
    counts pro rata to its span inside the month, as the ledger's lines do (:func:`usd_in`)."""
    ids = {str(i) for i in listed}
    lines = [Cost(str(row.get("source")), None, "charge", float(row.get("amount") or 0.0),
                  *(charge_span(row, now) or (now, now)), source="charges")  # no span: counted whole, now
             for row in rows if our_charge(row, ids)]
    return usd_in(lines, month_start(now), now)


LEDGER_HORIZON_S = 400 * 86400  # the longest a line of an instance we know nothing of may cover


@dataclass(frozen=True)
class Lifetime:
    """What the state store knows of an instance for judging its ledger lines: its highest
    known $/h (0: none), when this controller first saw it and when it was destroyed."""

    dph: float = 0.0
    born: float | None = None
    died: float | None = None


def lifetimes(rows: Iterable[dict[str, Any]]) -> dict[str, Lifetime]:
    """Instance id -> :class:`Lifetime`, from the state store's checked instance rows."""
    rows = list(rows)
    rates = known_rates((), rows)
    out: dict[str, Lifetime] = {}
    for row in rows:
        iid = str(row["id"])
        born, died = row.get("created_at"), row.get("destroyed_at")
        earlier = out.get(iid)
        if earlier is not None and earlier.born is not None:
            born = min(born, earlier.born)
        if died is None and earlier is not None:
            died = earlier.died
        out[iid] = Lifetime(rates.get(iid, 0.0), born, died)
    return out


def line_cap(line: Cost, life: Lifetime | None, now: float) -> float:
    """The most a ledger line can book (module docstring): CHARGE_MARGIN x its instance's $/h
    (:data:`UNKNOWN_DPH` when no rate is known) x the hours it can cover, plus CHARGE_SLACK_USD. A
    line covers its own span, no longer than the instance has lived on this controller's clock
    plus the charges' window (``/charges/`` may bill it from before we first saw it); a point
    line (a charge correction) covers that whole lifetime."""
    dph = life.dph if life is not None and life.dph > 0 else UNKNOWN_DPH
    if life is not None and life.born is not None:
        lived = max(0.0, min(life.died if life.died is not None else now, now) - life.born) + CHARGES_WINDOW_S
    else:
        lived = LEDGER_HORIZON_S
    span = line.end - line.start
    return dph * (min(span, lived) if span > 0 else lived) / 3600.0 * CHARGE_MARGIN + CHARGE_SLACK_USD


def line_problem(line: Cost, life: Lifetime | None, now: float) -> CorruptRecord | None:
    """Why a ledger line cannot be summed, or None: more than :func:`line_cap` allows, or an
    estimate below 0 (a charge correction may be negative, down to minus the cap)."""
    cap = line_cap(line, life, now)
    low = -cap if line.source == "charges" else 0.0
    if low <= line.usd <= cap:
        return None
    what = f"ledger line {line.seq}" if line.seq is not None else "a ledger line"
    rate = f"${life.dph:.3f}/h" if life is not None and life.dph > 0 else f"no known rate (held to ${UNKNOWN_DPH:g}/h)"
    return CorruptRecord(f"{what} books ${line.usd:,.6g} for instance {str(line.instance_id)[:40]} ({line.kind}), "
                         f"outside what its {rate} allows over the hours it covers (${low:,.2f} to ${cap:,.2f}): "
                         "not counted", line=line.seq)


def known_rates(instances: Iterable[Instance], rows: Iterable[dict[str, Any]] = ()) -> dict[str, float]:
    """Instance id -> the highest $/h we know it at: listed now (``instances``) or as the state
    store last saw it (``rows`` of ``list_instances``); what :func:`cap_charges` holds rows to."""
    rates: dict[str, float] = {}
    for iid, dph in [(str(i.id), i.dph_total) for i in instances] + [(str(r["id"]), r.get("dph_total")) for r in rows]:
        if isinstance(dph, (int, float)) and math.isfinite(dph) and dph > 0:
            rates[iid] = max(rates.get(iid, 0.0), float(dph))
    return rates


def billed_rates(state: InstanceState | str, dph_total: float, storage_dph: float) -> dict[str, float]:
    """What an instance bills per hour in ``state``, by meter: the GPU part of ``dph_total`` while
    running, storage in every state but offline. ``dph_total`` already includes storage, so it is
    never added twice. The one rule for the ledger's accruals and the sidebar's live figure."""
    state = InstanceState(state)
    rates: dict[str, float] = {}
    gpu_dph = max(dph_total - storage_dph, 0.0)
    if state is InstanceState.RUNNING and gpu_dph > 0:
        rates["gpu"] = gpu_dph
    if state is not InstanceState.OFFLINE and storage_dph > 0:
        rates["storage"] = storage_dph
    return rates


class CostLedger:
    def __init__(self, state: StateStore, clock: Callable[[], float] = time.time):
        self.state = state
        self.clock = clock

    def accrue(self, instances: Iterable[Instance], now: float | None = None, *,
               first_seen: dict[str, float] | None = None, on_corrupt: OnCorrupt | None = None) -> float:
        """Book every instance's spend since its last accrual (or since ``first_seen``, else now);
        returns the $ booked. A cursor that is not a number is handed to ``on_corrupt`` and the
        instance is accrued from ``first_seen`` again."""
        now = self.clock() if now is None else now
        first_seen = first_seen or {}
        booked = 0.0
        for inst in instances:
            key = f"{_CURSOR}{inst.provider}:{inst.id}"
            try:
                cursor = self.state.get_kv_float(key)
            except CorruptRecord as exc:
                if "key" not in exc.details:  # the store itself, not this value
                    raise
                (on_corrupt or _log)(exc)
                cursor = None
            since = cursor if cursor is not None else first_seen.get(str(inst.id), now)
            span = now - since
            if span <= 0:
                continue
            for kind, dph in billed_rates(inst.state, inst.dph_total, inst.storage_dph).items():
                usd = dph * span / 3600.0
                self.state.add_cost(Cost(str(inst.id), inst.run_id, kind, usd, since, now))
                booked += usd
            self.state.set_kv(key, repr(now))
        return booked

    def reconcile_charges(self, charges: Iterable[dict[str, Any]], run_of: dict[str, str | None],
                          now: float | None = None, *, suspects: Iterable[SuspectCharge] = ()) -> float:
        """Book (provider total - our total) per instance as a ``charge`` line; returns the sum booked.

        ``run_of`` maps instance id -> run id (ours only: other instances' charges are ignored).
        ``charges`` come capped (:func:`cap_charges`); ``suspects`` are kept with the instance's
        billed figure until an answer no longer has them (:meth:`suspect_charges`).
        """
        now = self.clock() if now is None else now
        by_instance = billed_by_instance(charges)
        flagged: dict[str, list[dict[str, Any]]] = {}
        for sc in suspects:
            flagged.setdefault(sc.instance_id, []).append(sc.to_dict())
        booked = 0.0
        ledger = self.lines(now=now)
        for iid, billed in by_instance.items():
            if iid not in run_of:
                continue
            ours = sum(c.usd for c in ledger if c.instance_id == iid)
            delta = billed - ours
            if abs(delta) >= 1e-6:
                self.state.add_cost(Cost(iid, run_of[iid], "charge", delta, now, now, source="charges"))
                booked += delta
            record: dict[str, Any] = {"billed": billed, "at": now}
            if iid in flagged:
                record["suspect"] = flagged[iid]
            self.state.set_kv(f"{_CHARGED}{iid}", json.dumps(record))
        return booked

    def book_charges(self, charges: Iterable[dict[str, Any]], now: float | None = None, *,
                     suspects: Iterable[SuspectCharge] = (), on_corrupt: OnCorrupt | None = None) -> float:
        """Book the provider's (capped) ``charges`` against every instance the store knows, gone
        ones included (:meth:`reconcile_charges`); the one way the watchdog and ``lora-cloud
        costs`` book what was billed. A store row that cannot be read goes to ``on_corrupt``."""
        known = self.state.list_instances(include_destroyed=True, **_skip(on_corrupt))
        return self.reconcile_charges(charges, {r["id"]: r["run_id"] for r in known}, now, suspects=suspects)

    def suspect_charges(self) -> list[dict[str, Any]]:
        """The suspect rows of the last ``/charges/`` answer, per instance (:func:`cap_charges`)."""
        out: list[dict[str, Any]] = []
        for _key, value in self.state.kv_items(_CHARGED):
            try:
                record = json.loads(value)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("suspect"), list):
                out.extend(s for s in record["suspect"] if isinstance(s, dict))
        return out

    def live_usd(self, instance_id: str, state: InstanceState | str, dph_total: float, storage_dph: float,
                 started: float, now: float | None = None) -> float:
        """An instance's spend so far: what the ledger booked, plus what it bills since the last
        accrual at :func:`billed_rates` (so the sidebar's figure is the ledger's, a poll early)."""
        now = self.clock() if now is None else now
        lines = [c for c in self.lines(now=now) if c.instance_id == str(instance_id)]
        booked_until = max([c.end for c in lines if c.source == "estimate"] + [started])
        pending = max(0.0, now - booked_until) / 3600.0 * sum(billed_rates(state, dph_total, storage_dph).values())
        return sum(c.usd for c in lines) + pending

    def lines(self, *, since: float = 0.0, run_id: str | None = None, now: float | None = None,
              on_corrupt: OnCorrupt | None = None) -> list[Cost]:
        """The ledger's lines that may be summed: each within what its instance's rate allows
        (:func:`line_problem`); the others, and rows that are not numbers, go to ``on_corrupt``
        (default: a logged warning) and count for nothing. Every sum of money goes through here."""
        now = self.clock() if now is None else now
        report = on_corrupt or _log_line
        found = self.state.costs(since=since, run_id=run_id, **_skip(on_corrupt))
        if not found:
            return found
        # an instance row that cannot be read is reported where instances are read; its lines are
        # then held to UNKNOWN_DPH and the horizon, still a bound
        lives = lifetimes(self.state.list_instances(include_destroyed=True, on_corrupt=lambda exc: None))
        out: list[Cost] = []
        for line in found:
            problem = line_problem(line, lives.get(str(line.instance_id)), now)
            if problem is None:
                out.append(line)
            else:
                report(problem)
        return out

    def month_usd(self, now: float | None = None, *, on_corrupt: OnCorrupt | None = None) -> float:
        now = self.clock() if now is None else now
        start = month_start(now)
        return usd_in(self.lines(since=start, now=now, on_corrupt=on_corrupt), start, now)

    def run_usd(self, run_id: str, *, on_corrupt: OnCorrupt | None = None) -> float:
        return sum(c.usd for c in self.lines(run_id=run_id, on_corrupt=on_corrupt))

    def instance_usd(self, instance_id: str) -> float:
        """What the ledger booked for one instance (lines it cannot believe left out)."""
        return sum(c.usd for c in self.lines() if c.instance_id == str(instance_id))

    def summary(self, now: float | None = None) -> LedgerSummary:
        """Today, this month (local calendar) and per run, in $; ``corrupt_lines`` says which
        ledger lines were left out (:meth:`lines`)."""
        now = self.clock() if now is None else now
        m0, d0 = month_start(now), day_start(now)
        corrupt: dict[str, str] = {}

        def skip(exc: CorruptRecord) -> None:
            corrupt.setdefault(exc.message, exc.message)

        every = self.lines(now=now, on_corrupt=skip)
        lines = [c for c in every if c.end >= m0]
        runs: dict[str, float] = {}
        instances: dict[str, float] = {}
        for c in every:
            instances[c.instance_id] = instances.get(c.instance_id, 0.0) + c.usd
            if c.run_id:
                runs[c.run_id] = runs.get(c.run_id, 0.0) + c.usd
        return LedgerSummary(
            today_usd=round(usd_in(lines, d0, now), 4),
            month_usd=round(usd_in(lines, m0, now), 4),
            per_run_usd={k: round(v, 4) for k, v in sorted(runs.items())},
            per_instance_usd={k: round(v, 4) for k, v in sorted(instances.items())},
            reconciled_with_charges=any(c.source == "charges" for c in lines),
            suspect_charges=tuple(self.suspect_charges()),
            corrupt_lines=tuple(corrupt.values()),
        )


class Costs:
    """Spend and budgets for every edge: the one home of the cost summary, the provider refresh
    (``lora-cloud costs``), and reading and changing the budgets (CLI, route, sidebar)."""

    def __init__(self, core: Core):
        self.core = core

    def ledger(self) -> CostLedger:
        return CostLedger(self.core.state, self.core.clock)

    async def summary(self) -> CostSummary:
        """Spend today, this month (local calendar), per run and per instance, against the budgets."""
        import asyncio

        spend = await asyncio.to_thread(self.ledger().summary)
        budgets = self.budgets()
        cap = budgets.max_month_usd
        return CostSummary(**{f.name: getattr(spend, f.name) for f in fields(spend)}, budgets=budgets,
                           month_fraction=round(spend.month_usd / cap, 4) if cap > 0 else None)

    async def refresh(self) -> float | None:
        """Bring the ledger up to date with vast.ai (accrue our instances, book its charges);
        returns the account's credit."""
        import asyncio

        ledger = self.ledger()
        state = self.core.state
        async with self.core.provider("vast")() as provider:
            instances = await provider.list()
            now = self.core.clock()
            first_seen = await asyncio.to_thread(state.record_sightings, instances, now)
            await asyncio.to_thread(ledger.accrue, instances, now, first_seen=first_seen)
            account = provider.account
            if account is None:
                return None
            rows = await asyncio.to_thread(state.list_instances, include_destroyed=True)
            since = now - CHARGES_WINDOW_S
            charges, suspects = cap_charges(await account.charges(since, now), known_rates(instances, rows), now=now,
                                            since=since, fallback_dph=self.core.settings.max_dph)
            await asyncio.to_thread(ledger.book_charges, charges, now, suspects=suspects)
            return (await account.current_user()).get("credit")

    def budgets(self) -> Budgets:
        """The budgets as the settings hold them now."""
        return Budgets.from_settings(self.core.settings)

    async def set_budgets(self, changes: dict[str, Any]) -> Budgets:
        """Persist new caps to config.toml (all validated first) and tell every open sidebar. The
        guard reads them from the settings on its next round."""
        import asyncio

        from ...errors import ConfigError
        from ...settings import Settings, set_value
        from .budgets import BUDGET_KEYS
        from ..events import BUDGET_EVENT

        if not isinstance(changes, dict) or not changes:
            raise ConfigError(f"give at least one of {', '.join(BUDGET_KEYS)}")
        clean: dict[str, float] = {}
        for raw_key, value in changes.items():
            key = str(raw_key).strip().lower().replace("-", "_")
            if key not in BUDGET_KEYS:
                raise ConfigError(f"unknown budget {raw_key!r}; known: {', '.join(BUDGET_KEYS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number")
            clean[key] = float(value)
        home = self.core.settings.home

        def write() -> None:
            Settings.load(home, **clean)  # validate them all before writing any
            for key, value in clean.items():
                set_value(home, key, repr(value))

        await asyncio.to_thread(write)
        self.core.source.invalidate()
        budgets = self.budgets()
        self.core.emit(BUDGET_EVENT, {"kind": "changed", "budgets": budgets.to_dict()})
        return budgets
