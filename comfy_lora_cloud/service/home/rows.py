"""Runs, instances and the cost ledger: their rows in the state store.

A row that cannot be read as what it should be (an unknown run state, a spec that is not JSON, a
price that is not a number) raises :class:`CorruptRecord` from a single get; listings skip it and
hand it to ``on_corrupt`` (default: a logged warning), so one bad row never hides the others.
``instances.created_at`` is when this controller first saw or recorded the instance, on this
controller's clock (never the provider's start date).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Iterable

from ...errors import CorruptRecord
from ...models import Cost, Instance, InstanceState, Run, RunState
from .connection import Connected
from .reading import OnCorrupt, finite, readable, warn


class Rows(Connected):
    """The runs, instances and ledger tables."""

    # ---- runs --------------------------------------------------------------------------------
    def put_run(self, run: Run) -> Run:
        run.updated_at = time.time()
        d = run.to_dict()
        d["spec"] = json.dumps(d["spec"], sort_keys=True)
        cols = ", ".join(d)
        marks = ", ".join(f":{k}" for k in d)
        updates = ", ".join(f"{k}=excluded.{k}" for k in d if k != "id")
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}", d)
        return run

    def update_run(self, run_id: str, **fields: Any) -> Run:
        if "state" in fields and isinstance(fields["state"], RunState):
            fields["state"] = fields["state"].value
        if "spec" in fields:
            fields["spec"] = json.dumps(fields["spec"], sort_keys=True)
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        with self.transaction() as conn:
            cur = conn.execute(f"UPDATE runs SET {sets} WHERE id = :_id", {**fields, "_id": run_id})
            if cur.rowcount == 0:
                raise KeyError(run_id)
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> Run | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row_to_run(row) if row else None

    def list_runs(self, *, live_only: bool = False, limit: int = 200, on_corrupt: OnCorrupt = warn) -> list[Run]:
        """Runs newest first; a row that cannot be read is skipped and handed to ``on_corrupt``."""
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        runs = list(readable(rows, _row_to_run, on_corrupt))
        return [r for r in runs if not r.state.is_terminal] if live_only else runs

    def find_run_by_hash(self, config_hash: str) -> Run | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM runs WHERE config_hash = ? ORDER BY created_at DESC LIMIT 1", (config_hash,)
            ).fetchone()
        return _row_to_run(row) if row else None

    def claim_run(self, run: Run, *, reuse_finished: bool = False) -> tuple[Run, bool]:
        """Insert ``run`` unless a run with the same ``config_hash`` is live (or, with
        ``reuse_finished``, finished well). Returns (the run that owns the hash, created?).

        One transaction, so two controllers queueing the same graph at the same moment end up
        with one run, not two rented machines."""
        run.updated_at = time.time()
        d = run.to_dict()
        d["spec"] = json.dumps(d["spec"], sort_keys=True)
        with self.transaction() as conn:
            for row in conn.execute(
                "SELECT * FROM runs WHERE config_hash = ? ORDER BY created_at DESC", (run.config_hash,)
            ).fetchall():
                existing = _row_to_run(row)
                if not existing.state.is_terminal or (reuse_finished and existing.state is RunState.DONE):
                    return existing, False
            cols = ", ".join(d)
            conn.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join(':' + k for k in d)})", d)
        return run, True

    # ---- instances ---------------------------------------------------------------------------
    def put_instance(self, inst: Instance, run_id: str | None = None, *, seen_at: float | None = None) -> None:
        """Insert or update an instance; ``seen_at`` (default: now) becomes its ``created_at`` the
        first time, on this controller's clock."""
        with self.transaction() as conn:
            self._upsert_instance(conn, inst, run_id, time.time() if seen_at is None else seen_at)

    def record_sightings(self, instances: Iterable[Instance], now: float) -> dict[str, float]:
        """Upsert every listed instance in one transaction; returns when this controller first saw
        each (its ``created_at``), so ages are measured on one clock: ours."""
        instances = list(instances)
        with self.transaction() as conn:
            for inst in instances:
                self._upsert_instance(conn, inst, inst.run_id, now)
            first: dict[str, float] = {}
            for inst in instances:
                row = conn.execute("SELECT created_at FROM instances WHERE provider = ? AND id = ?",
                                   (inst.provider, str(inst.id))).fetchone()
                seen = finite(row[0]) if row else None
                if seen is None:  # a bad value: start counting again from now, and keep it from now on
                    conn.execute("UPDATE instances SET created_at = ? WHERE provider = ? AND id = ?",
                                 (now, inst.provider, str(inst.id)))
                    seen = now
                first[str(inst.id)] = seen
        return first

    @staticmethod
    def _upsert_instance(conn: sqlite3.Connection, inst: Instance, run_id: str | None, seen_at: float) -> None:
        data = {k: v for k, v in inst.to_dict().items() if k != "raw"}
        conn.execute(
                """INSERT INTO instances (id, provider, label, run_id, state, gpu_name, dph_total,
                       storage_dph, created_at, data)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(provider, id) DO UPDATE SET label=excluded.label,
                       run_id=COALESCE(excluded.run_id, instances.run_id), state=excluded.state,
                       gpu_name=excluded.gpu_name, dph_total=excluded.dph_total,
                       storage_dph=excluded.storage_dph, data=excluded.data""",
                (
                    str(inst.id), inst.provider, inst.label, run_id or inst.run_id,
                    InstanceState(inst.state).value, inst.gpu_name, inst.dph_total, inst.storage_dph,
                    seen_at, json.dumps(data, default=str),
                ),
            )

    def mark_instance_destroyed(self, provider: str, instance_id: str, at: float | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE instances SET state = 'destroyed', destroyed_at = ? WHERE provider = ? AND id = ?",
                (at or time.time(), provider, str(instance_id)),
            )

    def list_instances(self, *, include_destroyed: bool = False, on_corrupt: OnCorrupt = warn) -> list[dict[str, Any]]:
        """Instance rows (plain dicts); a row whose numbers are not numbers is skipped."""
        q = "SELECT * FROM instances"
        if not include_destroyed:
            q += " WHERE state != 'destroyed'"
        with self.connect() as conn:
            rows = conn.execute(q + " ORDER BY id").fetchall()
        out = list(readable(rows, _checked_instance_row, on_corrupt))
        out.sort(key=lambda r: r["created_at"])
        return out

    def seed_sightings(self, seen: dict[str, tuple[Instance, float]]) -> None:
        """Record when each instance was first seen (instance id -> (instance, time)); a time
        already recorded is only ever moved earlier, so an age never starts again from zero."""
        with self.transaction() as conn:
            for inst, at in seen.values():
                self._upsert_instance(conn, inst, inst.run_id, at)
                conn.execute("UPDATE instances SET created_at = MIN(created_at, ?) WHERE provider = ? AND id = ?",
                             (at, inst.provider, str(inst.id)))

    # ---- ledger ------------------------------------------------------------------------------
    def add_cost(self, cost: Cost) -> None:
        with self.transaction() as conn:
            conn.execute(
                'INSERT INTO ledger (instance_id, run_id, kind, usd, start, "end", source) VALUES (?,?,?,?,?,?,?)',
                (str(cost.instance_id), cost.run_id, cost.kind, cost.usd, cost.start, cost.end, cost.source),
            )

    def costs(self, *, since: float = 0.0, run_id: str | None = None, on_corrupt: OnCorrupt = warn) -> list[Cost]:
        """Ledger lines; a line whose amount or times are not finite numbers is skipped."""
        q, args = 'SELECT * FROM ledger WHERE "end" >= ?', [since]
        if run_id is not None:
            q += " AND run_id = ?"
            args.append(run_id)
        with self.connect() as conn:
            rows = conn.execute(q + " ORDER BY start", args).fetchall()
        return list(readable(rows, _row_to_cost, on_corrupt))


def _row_to_run(row: sqlite3.Row) -> Run:
    d = dict(row)

    def corrupt(why: str) -> CorruptRecord:
        return CorruptRecord(f"run {str(d.get('id'))[:100]} in the state store has {why}", run_id=d.get("id"))

    try:
        state = RunState(d.get("state"))
    except ValueError:
        raise corrupt(f"an unknown state {str(d.get('state'))[:40]!r}") from None
    try:
        spec = json.loads(d.get("spec") or "{}")
    except ValueError:
        raise corrupt("a spec that is not JSON") from None
    if not isinstance(spec, dict):
        raise corrupt("a spec that is not a JSON object")
    for name in ("dph", "created_at", "updated_at"):
        value = finite(d.get(name))
        if value is None:
            raise corrupt(f"{name} {str(d.get(name))[:40]!r}, not a number")
        d[name] = value
    d["state"], d["spec"] = state, spec
    return Run.from_dict(d)


def _checked_instance_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for name in ("dph_total", "storage_dph", "created_at"):
        value = finite(d.get(name))
        if value is None:
            raise CorruptRecord(f"instance {str(d.get('id'))[:40]} in the state store has {name} "
                                f"{str(d.get(name))[:40]!r}, not a number")
        d[name] = value
    if d.get("destroyed_at") is not None:
        d["destroyed_at"] = finite(d["destroyed_at"])
    return d


def _row_to_cost(r: sqlite3.Row) -> Cost:
    numbers = [finite(r[k]) for k in ("usd", "start", "end")]
    if any(v is None for v in numbers):
        raise CorruptRecord(f"ledger line {r['seq']} (instance {str(r['instance_id'])[:40]}) has an amount or "
                            "time that is not a number")
    usd, start, end = numbers
    return Cost(r["instance_id"], r["run_id"], r["kind"], usd, start, end, r["source"], seq=r["seq"])
