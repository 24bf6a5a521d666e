"""Fault scenarios for the limits a run travels with, and for the end of a run the bucket would
not take.

A run records the limits it was launched under in its ``spec.json`` (``training/spec.py``). The
home that launched it holds it to its current settings; every other home holds it to the
recorded ones, and where its own settings are lower it reports the difference instead of
destroying another's run. A bucket write that fails while the watchdog ends a run leaves the run
live in the store, and the next round ends it in both, with one end event.

Each row runs the real ``lora-cloud instances reconcile`` process against the fake vast.ai and
the GCS emulator; the bucket write fault is a small gate in front of the emulator that refuses
uploads of one object (what a bucket permission or an outage of one key looks like).
"""

from __future__ import annotations

import http.client
import json
import http.server
import threading
import urllib.parse
from typing import Any

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.storage.layout import run_key
from comfy_lora_cloud.training.spec import RunSpec
from comfy_lora_cloud.training.status import read_events

from .harness import World
from .registry import scenario
from .scenarios_guard import PRICEY, Results, all_of, breach, local_state, no_verdicts, orphan, ours, problem

# this home's budgets in these rows: a $1/hr max_dph that the pricey GPU (about $2.7/hr) breaks
THIS_HOME = {"max_dph": 1.0}


def launched_with(w: World, run_id: str, limits: dict[str, Any] | None) -> None:
    """``spec.json`` as a launch writes it, recording ``limits`` (None: an older version's, without)."""
    spec = RunSpec(run_id=run_id, dataset="cats", lora_type="character", lora_name="cats")
    if limits is None:
        spec.save(w.storage)
    else:  # written as JSON whatever it holds: a rented host can write anything there
        w.storage.write_bytes(run_key(run_id, "spec.json"), json.dumps({**spec.to_dict(), "limits": limits}).encode())


def elsewhere(w: World, name: str, fate: str, why: str, limits: dict[str, Any] | None) -> str:
    """A live run of this bucket launched from another home (not in this home's store) on the
    pricey GPU; its spec records ``limits``."""
    run_id = w.tagged(name)
    w.treasure([run_id])
    launched_with(w, run_id, limits)
    w.instance(run_id, fate, why, gpu=PRICEY)
    w.status(run_id)
    if fate == "die":
        w.expect_end(run_id, RunState.FAILED)
    return run_id


def verdict_limit(budget: str, run_id: str, limit: float):
    """The breach of ``budget`` for ``run_id`` was judged against ``limit``."""
    def check(w: World, results: Results) -> None:
        hits = [v for r in results for v in r.get("budgets", []) if v["level"] == "breach"
                and v["budget"] == budget and f"(run {run_id})" in v["message"]]
        assert hits and all(f"of {limit:g} " in v["message"] for v in hits), (budget, run_id, limit, hits)
    return check


def one_end_event(run_id: str, state: RunState):
    def check(w: World, results: Results) -> None:
        ends = [e for e in read_events(w.storage, run_id) if e.get("kind") == "state" and e.get("state") == state.value]
        assert len(ends) == 1, read_events(w.storage, run_id)
    return check


# ---- two homes, two budgets ---------------------------------------------------------------------
@scenario("other_home_run_kept_under_its_limits", "another home launched a run with max_dph $5/hr on a GPU "
          "pricier than this home's $1/hr: kept, and the difference reported", budgets=THIS_HOME,
          check=lambda w, r: all_of(no_verdicts("max_dph"),
                                    problem("run_limits", w.theirs, "this home's max_dph is $1.00/hr, the run's "
                                                                    "$5.00/hr"),
                                    problem("run_limits", w.theirs, "another home launched it"))(w, r))
def _other_home_kept(w: World) -> None:
    w.theirs = elsewhere(w, "laptop2", "keep", "above this home's max_dph, within the $5/hr it was launched under",
                         {"max_dph": 5.0, "max_run_usd": 100.0, "max_hours": 6.0})
    orphan(w)


@scenario("other_home_run_over_its_limits", "another home's run on a GPU above the max_dph it was launched "
          "under ($1.5/hr): destroyed by this home, held to that limit", budgets=THIS_HOME,
          check=lambda w, r: verdict_limit("max_dph", w.theirs, 1.5)(w, r))
def _other_home_over(w: World) -> None:
    w.theirs = elsewhere(w, "laptop2", "die", "above the $1.5/hr max_dph it was launched under",
                         {"max_dph": 1.5, "max_run_usd": 100.0, "max_hours": 6.0})


@scenario("other_home_run_without_limits", "another home's run launched by an older version (no limits "
          "recorded) on a GPU above this home's max_dph: not this home's budget to enforce, kept and reported",
          budgets=THIS_HOME, check=lambda w, r: all_of(no_verdicts("max_dph"),
                                                       problem("run_limits", w.theirs, "records no limits"))(w, r))
def _other_home_no_limits(w: World) -> None:
    w.theirs = elsewhere(w, "oldpack", "keep", "an older version's run: its limits are not known here", None)


@scenario("other_home_limits_hostile", "a host rewrites its spec's limits (1e300 $/hr, a word, -1): refused, the "
          "run held to the hard maxima and reported, never to no limit", budgets=THIS_HOME,
          check=lambda w, r: all_of(no_verdicts("max_dph"),
                                    problem("run_limits", w.huge, "cannot be read"),
                                    problem("run_limits", w.word, "cannot be read"),
                                    problem("run_limits", w.negative, "cannot be read"))(w, r))
def _other_home_hostile(w: World) -> None:
    fine = {"max_run_usd": 100.0, "max_hours": 6.0}
    w.huge = elsewhere(w, "huge", "keep", "limits refused: the hard maxima hold it", {**fine, "max_dph": 1e300})
    w.word = elsewhere(w, "word", "keep", "limits refused: the hard maxima hold it", {**fine, "max_dph": "lots"})
    w.negative = elsewhere(w, "negative", "keep", "limits refused: the hard maxima hold it", {**fine, "max_dph": -1})


@scenario("launching_home_holds_its_current_settings", "a run launched here under max_dph $5/hr, then `budget set "
          "max_dph 1`: this home holds its own run to the setting it has now", budgets=THIS_HOME,
          check=all_of(verdict_limit("max_dph", "mine", 1.0), local_state("mine", RunState.FAILED)))
def _launching_home(w: World) -> None:
    w.treasure(["mine"])
    launched_with(w, "mine", {"max_dph": 5.0, "max_run_usd": 100.0, "max_hours": 6.0})
    iid = w.instance("mine", "die", "above the max_dph this home has now (it was launched under $5/hr)", gpu=PRICEY)
    w.local_run("mine", iid)
    w.status("mine")
    w.expect_end("mine", RunState.FAILED)


# ---- the bucket will not take the end ---------------------------------------------------------------
class BucketGate:
    """In front of the emulator: forwards every request, but refuses (403) each upload that
    names ``refused`` (the object a fault makes unwritable)."""

    def __init__(self, upstream: str, refused: str):
        self.upstream = urllib.parse.urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        self.refused = refused.encode()
        self.refusals = 0
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                named = self.refused_in(body)
                if self.command in ("POST", "PUT", "PATCH") and named:
                    gate.refusals += 1
                    self._reply(403, {"Content-Type": "application/json"},
                                b'{"error": {"code": 403, "message": "the gate refuses this object"}}')
                    return
                conn = http.client.HTTPConnection(gate.upstream.hostname, gate.upstream.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection", "keep-alive", "content-length")}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    kept = {k: v for k, v in resp.getheaders()
                            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length")}
                    self._reply(resp.status, kept, data)
                finally:
                    conn.close()

            def refused_in(self, body: bytes) -> bool:
                return gate.refused in body or gate.refused in urllib.parse.unquote(self.path).encode()

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def gate_status(w: World, run_id: str) -> None:
    """The guard's next pass reaches the bucket through a gate that refuses ``status.json`` of
    ``run_id``."""
    w.emulator = w.env["STORAGE_EMULATOR_HOST"]
    w.gate = BucketGate(w.emulator, run_key(run_id, "status.json"))
    w.env["STORAGE_EMULATOR_HOST"] = w.gate.url


def heal(w: World) -> None:
    w.env["STORAGE_EMULATOR_HOST"] = w.emulator
    w.gate.close()


def bucket_end_retried(w: World, results: Results) -> None:
    assert w.gate.refusals > 0, "the gate never refused the status write"
    first, second = results
    assert any(p["kind"] == "bucket" and p["subject"] == "spender" and "written again next round" in p["message"]
               for p in first["problems"]), first["problems"]
    assert [v["budget"] for v in first["budgets"] if v["level"] == "breach"] == ["max_dph"], first["budgets"]
    assert not second["budgets"] and not second["reconcile"]["lost_runs"], second  # ended as meant, not "lost"
    assert w.store.get_run("spender").error.startswith("stopped by the watchdog")
    assert not w.store.get_kv("run:end_pending:spender")


@scenario("bucket_end_fails_during_enforcement", "the watchdog destroys a run over max_dph, but the bucket refuses "
          "its status.json: the store stays live, and the next round ends the run in both, with one end event",
          budgets=THIS_HOME, passes=2, between=heal,
          check=all_of(bucket_end_retried, local_state("spender", RunState.FAILED),
                       one_end_event("spender", RunState.FAILED), local_state("mine", RunState.TRAINING)))
def _bucket_end_fails(w: World) -> None:
    w.treasure(["spender", "mine"])
    iid = w.instance("spender", "die", "above max_dph", gpu=PRICEY)
    w.local_run("spender", iid)
    w.status("spender")
    w.expect_end("spender", RunState.FAILED)
    ours(w, "mine")
    gate_status(w, "spender")
