"""The fake vast.ai HTTP API (aiohttp), faithful enough that the official ``vastai`` CLI works against it.

``FakeVast`` wraps :class:`FakeVastState` in an aiohttp application; ``FakeVast.start_in_thread``
serves it on 127.0.0.1 from a private thread and event loop, so synchronous tests, the official
``vastai`` CLI and controller subprocesses can all talk to it while the test pokes faults.

Faults: :meth:`FakeVast.fail_next` queues error answers (429 plain text / JSON / detail, 5xx,
search quota, with or without ``Retry-After``); :meth:`FakeVast.storm` answers a random share of
calls with 429/5xx, and a 5xx on create may come *after* the instance was made (a lost response).

Scripted answers for fault-injection tests: ``charges_script`` (garbage rows, a garbage body,
a ``next_token`` that repeats or never ends) and ``listing_token`` (a listing whose
``next_token`` repeats). A test that runs the fake as its own process drives all of this through
the control routes under ``/_fake/`` (account key required): reset, instance (create one that
is already running, backdated or with a skewed ``start_date``), vanish, outbid (now or at a kohya
step, with a SIGTERM grace, resuming after a delay or never), faults, storm, charges, listing,
state. See :meth:`FakeVast._control`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from .state import FakeVastState, coerce, matches

_LISTABLE = {"id", "label", "actual_status", "intended_status", "gpu_name", "verification", "machine_id",
             "host_id", "cur_state", "next_state", "image_uuid", "is_bid", "geolocation", "start_date"}
_COMPUTED = {"dph_total", "num_gpus", "dph_base", "duration", "uptime_mins"}


@dataclass
class Fault:
    status: int
    retry_after: float | None = None
    body: str = "json"  # json | text | detail | quota
    path_contains: str = ""
    act_first: bool = False  # perform the call, then answer with the error (lost response)
    delay_s: float = 0.0  # with act_first: answer normally, but only after this long (client timeout)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # exactly "application/json": the CLI's table mode rejects a charset suffix
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json",
                        headers=headers)


def _error(status: int, error: str, msg: str, **extra: Any) -> web.Response:
    return _json({"success": False, "error": error, "msg": msg, **extra}, status=status)


def _decode_query(request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in request.query.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


class FakeVast:
    def __init__(self, api_key: str = "test-vast-key-0123456789", *, seed: int = 0, **state_kwargs: Any):
        self.state = FakeVastState(api_key, **state_kwargs)
        self.faults: list[Fault] = []
        self.storm_rate = 0.0
        self.storm_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)
        self.rng = random.Random(seed)
        self.fault_log: list[tuple[str, int, bool]] = []  # (path, status, acted)
        self.storm_retry_after: float | None = None  # None: a random choice per fault
        self.seed = seed
        self.charges_script: dict[str, Any] = {}
        self.listing_token: str | None = None  # "same": every listing page points at itself
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # ---- fault control -------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 429, *, retry_after: float | None = None, body: str = "json",
                  path_contains: str = "", act_first: bool = False, delay_s: float = 0.0) -> None:
        with self.state.lock:
            self.faults.extend(Fault(status, retry_after, body, path_contains, act_first, delay_s) for _ in range(n))

    def storm(self, rate: float, statuses: tuple[int, ...] = (429, 500, 502, 503, 504),
              retry_after: float | None = None) -> None:
        with self.state.lock:
            self.storm_rate, self.storm_statuses, self.storm_retry_after = rate, tuple(statuses), retry_after

    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self.state.lock:
            for i, f in enumerate(self.faults):
                if f.path_contains in path:
                    return self.faults.pop(i)
            if self.storm_rate and self.rng.random() < self.storm_rate:
                status = self.rng.choice(self.storm_statuses)
                act = status >= 500 and method != "GET" and self.rng.random() < 0.5
                ra = self.storm_retry_after if self.storm_retry_after is not None else self.rng.choice([None, 0.01])
                return Fault(status, ra, self.rng.choice(["json", "text", "detail"]), act_first=act)
        return None

    @staticmethod
    def _fault_response(f: Fault) -> web.Response:
        headers = {}
        if f.retry_after is not None:
            headers["Retry-After"] = str(f.retry_after)
        if f.body == "quota":
            return _json({"success": False, "error": "search_quota_exceeded", "msg": "daily search quota"},
                         status=429, headers={"X-RateLimit-Reset": "1790035200"})
        if f.status == 429 and f.body == "text":
            return web.Response(text="API requests too frequent endpoint threshold=3.0", status=429, headers=headers)
        if f.body == "detail":
            return _json({"detail": "Too many requests" if f.status == 429 else "upstream error"}, f.status, headers)
        code = "rate_limit_exceeded" if f.status == 429 else "server_error"
        return _json({"success": False, "error": code, "msg": f"fake fault {f.status}"}, f.status, headers)

    # ---- app ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.cleanup_ctx.append(self._ticker)
        return app

    async def _ticker(self, app: web.Application):
        async def loop() -> None:
            while True:
                await asyncio.sleep(0.2)
                await asyncio.to_thread(self.state.tick)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        self.state.shutdown()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - a fake must answer, not hang
            return _error(500, "server_error", f"fake server bug: {exc!r}")

    def _auth(self, request: web.Request) -> tuple[bool, int | None]:
        """(is the account key, instance id when a CONTAINER_API_KEY was used)."""
        header = request.headers.get("Authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.query.get("api_key", "")
        if not key:
            return False, None
        if secrets.compare_digest(key, self.state.api_key):
            return True, None
        return False, self.state.instance_for_key(key)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"].strip("/")
        if path.startswith("/logs/"):
            return self._log_result(path[len("/logs/"):])
        if path == "/api/v0/gpu_names/unique":
            names = sorted({o["gpu_name"] for o in self.state.offers.values()})
            return _json({"gpu_names": names})
        if path.startswith("/_fake/"):
            if not self._auth(request)[0]:
                return _error(401, "auth_error", "Invalid user key")
            raw = await request.read() if request.can_read_body else b""
            return await asyncio.to_thread(self._control, path[len("/_fake/"):], json.loads(raw) if raw else {})
        if not path.startswith("/api/"):
            return _error(404, "not_found", "no such path")
        account, inst_id = self._auth(request)
        if not account and inst_id is None:
            if "Authorization" not in request.headers and "api_key" not in request.query:
                return _error(401, "auth_error", "This action requires login.")
            return _error(401, "auth_error", "Invalid user key")
        body: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    return _error(400, "invalid_args", "body is not JSON")
        query = _decode_query(request)
        with self.state.lock:
            self.state.requests.append((request.method, path))
        fault = self._take_fault(path, request.method)
        if fault and not fault.act_first:
            self.fault_log.append((path, fault.status, False))
            return self._fault_response(fault)
        await asyncio.to_thread(self.state.tick)
        if not account:
            resp = self._container_call(request.method, path, body, inst_id)
        else:
            resp = self._route(request, request.method, path, query, body)
        if fault:
            self.fault_log.append((path, fault.status, True))
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)  # the answer comes too late for the client
                return resp
            return self._fault_response(fault)
        return resp

    def _container_call(self, method: str, path: str, body: dict, inst_id: int | None) -> web.Response:
        """What a CONTAINER_API_KEY may do: read, stop or destroy its own instance."""
        m = re.fullmatch(r"/api/v0/instances/(\d+)", path)
        if not m or int(m.group(1)) != inst_id:
            return _error(403, "forbidden", "instance keys may only manage their own instance")
        return self._instance_one(method, inst_id, body)

    def _route(self, request: web.Request, method: str, path: str, q: dict, body: dict) -> web.Response:
        p = path
        if p in ("/api/v0/bundles", "/api/v0/search/asks"):
            filt = body.get("q", body) if p.endswith("asks") else body
            if not filt and "q" in q:
                filt = q["q"]
            return _json({"offers": self.state.search(filt or {})})
        if m := re.fullmatch(r"/api/v0/asks/(\d+)", p):
            if method != "PUT":
                return _error(405, "method_not_allowed", "use PUT")
            status, data = self.state.create(int(m.group(1)), body)
            return _json(data, status)
        if p == "/api/v1/instances":
            return self._list_v1(q)
        if p == "/api/v0/instances":
            return _error(410, "gone", "Use /api/v1/instances/ instead")
        if p == "/api/v0/instances/filters":
            with self.state.lock:
                rows = [self.state.instance_row(i) for i in self.state.instances.values()]
            return _json({"filters": [{"actual_status": r["actual_status"], "verification": r["verification"],
                                       "gpu_name": r["gpu_name"]} for r in rows]})
        if m := re.fullmatch(r"/api/v0/instances/request_logs/(\d+)", p):
            return self._request_logs(request, int(m.group(1)), body)
        if m := re.fullmatch(r"/api/v0/instances/bid_price/(\d+)", p):
            with self.state.lock:
                inst = self.state.get(int(m.group(1)))
                if inst is None:
                    return _error(404, "no_such_instance", "Instance not found")
                inst.price, inst.is_bid = float(coerce(body.get("price"))), True
            return _json({"success": True})
        if m := re.fullmatch(r"/api/v0/instances/(\d+)/ssh(?:/(\d+))?", p):
            return self._instance_ssh(method, int(m.group(1)), m.group(2), body)
        if m := re.fullmatch(r"/api/v0/instances/(\d+)", p):
            return self._instance_one(method, int(m.group(1)), body)
        if m := re.fullmatch(r"/api/v0/ssh(?:/(\d+))?", p):
            return self._account_ssh(method, m.group(1), body)
        if p in ("/api/v0/users/current", "/api/v0/users/me"):
            return _json(self._user())
        if p == "/api/v0/charges":
            return self._charges(q)
        if p == "/api/v0/users/me/invoices":
            rows = self.state.charges(0, float("inf"))
            inv = [{"description": r["description"], "quantity": 1, "rate": r["amount"], "amount": r["amount"],
                    "timestamp": r["end"], "type": "charge", "instance_id": r["metadata"]["instance_id"]}
                   for r in rows]
            return _json({"invoices": inv, "current": {"charges": sum(r["amount"] for r in rows)}})
        if p == "/api/v1/invoices":
            return _json({"success": True, "count": 0, "total": 0, "next_token": None, "results": []})
        return _error(404, "not_found", f"no route for {method} {p}")

    # ---- handlers ------------------------------------------------------------------------------
    def _instance_one(self, method: str, iid: int, body: dict) -> web.Response:
        st = self.state
        if method == "GET":
            with st.lock:
                inst = st.get(iid)
                return _json({"instances": st.instance_row(inst) if inst else None})
        if method == "PUT":
            with st.lock:
                inst = st.get(iid)
                if inst is None:
                    return _error(404, "no_such_instance", f"Instance {iid} not found.")
                if "label" in body:
                    inst.label = body["label"]
                if body.get("state") in ("stopped", "running"):
                    st.set_state(iid, body["state"])
            return _json({"success": True})
        if method == "DELETE":
            if not st.destroy(iid):
                return _error(404, "no_such_instance", f"Instance {iid} not found.")
            return _json({"success": True, "msg": "destroying instance"})
        return _error(405, "method_not_allowed", method)

    def _list_v1(self, q: dict) -> web.Response:
        filters = q.get("select_filters") or {}
        if not isinstance(filters, dict):
            return _error(400, "invalid_args", "select_filters must be an object")
        for col in filters:
            if col in _COMPUTED or col not in _LISTABLE:
                return _error(400, "invalid_args", f"cannot filter on {col}")
        order = q.get("order_by") or [{"col": "id", "dir": "asc"}]
        limit = int(coerce(q.get("limit", 25)) or 0)
        limit = 5 if limit <= 0 else min(limit, 25)
        offset = 0
        if q.get("after_token"):
            try:
                offset = int(base64.urlsafe_b64decode(str(q["after_token"]).encode()).decode().split(":", 1)[1])
            except (ValueError, IndexError, UnicodeDecodeError):
                return _error(400, "invalid_args", "invalid after_token")
        with self.state.lock:
            rows = [self.state.instance_row(i) for i in self.state.instances.values()]
        labels: dict[str, int] = {}
        for r in rows:
            if r["label"]:
                labels[r["label"]] = labels.get(r["label"], 0) + 1
        total = len(rows)
        rows = [r for r in rows if all(matches(r.get(c), cond) for c, cond in filters.items())]
        keys = [(o["col"], o.get("dir", "asc")) for o in order if isinstance(o, dict)] + [("id", "asc")]
        for col, d in reversed(keys):
            rows.sort(key=lambda r: (r.get(col) is None, r.get(col) if r.get(col) is not None else 0),
                      reverse=d == "desc")
        page = rows[offset: offset + limit]
        nxt = None
        if offset + limit < len(rows):
            nxt = base64.urlsafe_b64encode(f"o:{offset + limit}".encode()).decode()
        if self.listing_token == "same":  # a broken server: every page says "more after me"
            nxt = base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()
        cols = q.get("select_cols")
        if isinstance(cols, list) and cols != ["*"]:
            page = [{c: r.get(c) for c in cols} for r in page]
        return _json({"success": True, "instances": page, "instances_found": len(rows),
                      "total_instances": total, "label_counts": labels, "next_token": nxt})

    def _request_logs(self, request: web.Request, iid: int, body: dict) -> web.Response:
        st = self.state
        with st.lock:
            inst = st.get(iid)
            if inst is None:
                return _error(404, "no_such_instance", f"Instance {iid} not found.")
            lines = list(inst.log_lines)
            if inst.log_path and inst.log_path.exists():
                lines += inst.log_path.read_text(errors="replace").splitlines()
        tail = int(coerce(body.get("tail") or 1000))
        lines = lines[-tail:]
        if body.get("filter"):
            lines = [ln for ln in lines if str(body["filter"]) in ln]
        token = secrets.token_hex(8)
        with st.lock:
            st.log_results[token] = ["\n".join(lines) + "\n", 1]
        url = f"{request.scheme}://{request.host}/logs/{token}.txt"
        return _json({"success": True, "result_url": url, "msg": "logs requested"})

    def _log_result(self, name: str) -> web.Response:
        token = name.removesuffix(".txt")
        with self.state.lock:
            entry = self.state.log_results.get(token)
            if entry is None:
                return web.Response(status=404, text="NoSuchKey")
            if entry[1] > 0:  # uploaded asynchronously: the first poll misses
                entry[1] -= 1
                return web.Response(status=404, text="NoSuchKey")
        return web.Response(text=entry[0], content_type="text/plain")

    def _account_ssh(self, method: str, key_id: str | None, body: dict) -> web.Response:
        st = self.state
        with st.lock:
            if method == "GET":
                return _json([k for k in st.ssh_keys])
            if method == "POST":
                text = str(body.get("ssh_key") or "").strip()
                if not text.startswith(("ssh-", "ecdsa-")):
                    return _error(400, "invalid_args", "not an SSH public key")
                st.next_key_id += 1
                key = {"id": st.next_key_id, "user_id": 1, "public_key": text, "key": text,
                       "created_at": st.now(), "deleted_at": None}
                st.ssh_keys.append(key)
                return _json({"success": True, "key": key})
            if key_id is None:
                return _error(400, "invalid_args", "key id required")
            for k in st.ssh_keys:
                if k["id"] == int(key_id):
                    if method == "DELETE":
                        st.ssh_keys.remove(k)
                    else:
                        k["public_key"] = k["key"] = str(body.get("ssh_key") or k["public_key"])
                    return _json({"success": True})
            return _error(404, "not_found", "no such key")

    def _instance_ssh(self, method: str, iid: int, key_id: str | None, body: dict) -> web.Response:
        st = self.state
        with st.lock:
            inst = st.get(iid)
            if inst is None:
                return _error(404, "no_such_instance", f"Instance {iid} not found.")
            if method == "GET":
                return _json({"success": True, "ssh_keys": json.dumps(inst.ssh_keys)})
            if method == "POST":
                text = str(body.get("ssh_key") or "").strip()
                if not text.startswith(("ssh-", "ecdsa-")):
                    return _error(400, "invalid_args", "not an SSH public key")
                st.next_key_id += 1
                inst.ssh_keys.append({"id": st.next_key_id, "public_key": text})
                st.write_authorized_keys()
                return _json({"success": True, "msg": "ssh key attached"})
            if method == "DELETE" and key_id:
                inst.ssh_keys = [k for k in inst.ssh_keys if k["id"] != int(key_id)]
                return _json({"success": True})
        return _error(405, "method_not_allowed", method)

    def _user(self) -> dict[str, Any]:
        with self.state.lock:
            credit = round(self.state.credit, 6)
        return {"id": 1, "username": "tester", "email": "tester@example.com", "fullname": "Test User",
                "credit": credit, "balance": 0.0, "balance_threshold": 5.0, "balance_threshold_enabled": False,
                "can_pay": True, "has_billing": True, "billed_expected": 0.0, "billed_verified": 0.0,
                "paid_expected": 0.0, "paid_verified": 0.0, "ssh_key": None, "host_agreement_accepted": False,
                "tfa_status": False, "user": "tester", "sid": "fake", "rights": None}

    def _charges(self, q: dict) -> web.Response:
        f = q.get("select_filters") or {}
        day = f.get("day") if isinstance(f, dict) else None
        if not isinstance(day, dict):
            return _error(400, "invalid_args", "select_filters.day range is required")
        t0, t1 = float(coerce(day.get("gte", 0))), float(coerce(day.get("lte", float("inf"))))
        rows = self.state.charges(t0, t1)
        if q.get("latest_first"):
            rows.reverse()
        limit = min(int(coerce(q.get("limit", 500))), 500)
        rows = rows[:limit]
        script = self.charges_script
        if "replace" in script:
            return _json(script["replace"])
        after = str(q.get("after_token") or "")
        token = None
        if script.get("next_token") == "same":
            token = "tok-same"
        elif script.get("next_token") == "endless":
            token = f"tok-{int(after.rsplit('-', 1)[-1]) + 1 if after else 1}"
        if after:
            rows = []  # later pages of a scripted paging: nothing new
        else:
            rows = rows + list(script.get("extra_rows") or [])
        total = sum(r["amount"] for r in rows if isinstance(r, dict) and type(r.get("amount")) in (int, float))
        return _json({"success": True, "count": len(rows), "total": round(total, 6), "next_token": token,
                      "results": rows})

    # ---- control (tests driving a fake in another process) ------------------------------------------
    def _control(self, verb: str, body: dict[str, Any]) -> web.Response:
        """``/_fake/<verb>``: what a test in another process may do to this fake."""
        st = self.state
        if verb == "reset":
            with st.lock:
                for iid in list(st.instances):
                    st.destroy(iid)
                st.destroyed.clear()
                st.rented.clear()
                st.requests.clear()
                self.faults.clear()
                self.fault_log.clear()
                self.storm_rate, self.storm_retry_after = 0.0, None
                self.rng = random.Random(self.seed)
                self.charges_script, self.listing_token = {}, None
            return _json({"success": True})
        if verb == "instance":
            return self._control_instance(body)
        if verb == "vanish":
            return _json({"success": st.destroy(int(body["id"]))})
        if verb == "outbid":  # {"id", "seconds": null (never) | s, "grace_s", "at_step"}
            if st.get(int(body["id"])) is None:
                return _error(404, "no_such_instance", f"no instance {body['id']}")
            st.outbid(int(body["id"]), None if body.get("seconds") is None else float(body["seconds"]),
                      grace_s=float(body.get("grace_s", 0.0)),
                      at_step=None if body.get("at_step") is None else int(body["at_step"]))
            return _json({"success": True})
        if verb == "faults":
            self.fail_next(int(body.get("n", 1)), int(body.get("status", 503)), retry_after=body.get("retry_after"),
                           body=str(body.get("body", "json")), path_contains=str(body.get("path_contains", "")),
                           act_first=bool(body.get("act_first", False)))
            return _json({"success": True})
        if verb == "storm":
            self.storm(float(body.get("rate", 0.0)), tuple(body.get("statuses") or (429, 500, 502, 503, 504)),
                       retry_after=body.get("retry_after"))
            return _json({"success": True})
        if verb == "charges":
            with st.lock:
                self.charges_script = dict(body)
            return _json({"success": True})
        if verb == "listing":
            with st.lock:
                self.listing_token = body.get("next_token")
            return _json({"success": True})
        if verb == "state":
            with st.lock:
                st.tick()
                live = [{"id": i.id, "label": i.label, "actual": i.visible_status, "start_date": i.start_date,
                         "created_at": i.created_at, "dph_total": round(i.gpu_dph + i.disk_dph, 6),
                         "billed_usd": round(i.gpu_usd + i.disk_usd, 6)} for i in st.instances.values()]
                return _json({"instances": live, "destroyed": sorted(st.destroyed),
                              "requests": len(st.requests), "faults": len(self.fault_log)})
        return _error(404, "not_found", f"no control verb {verb!r}")

    def _control_instance(self, body: dict[str, Any]) -> web.Response:
        """Create an instance on the cheapest free offer (of ``gpu_name``, if given) at once:
        ``age_s`` backdates it (it has been billing that long), ``skew_s`` puts its
        ``start_date`` on a provider clock that far ahead of (or, negative, behind) the real one."""
        st = self.state
        with st.lock:
            free = [o for o in st.offers.values() if o["id"] not in st.rented and o["num_gpus"] == 1
                    and (not body.get("gpu_name") or o["gpu_name"] == body["gpu_name"])]
            if not free:
                return _error(409, "no_offer", "no free offer matches")
            offer = min(free, key=lambda o: (o["dph_base"], o["id"]))
            status, data = st.create(int(offer["id"]), {"label": body.get("label"), "image": "trainer",
                                                        "disk": float(body.get("disk", 10))})
            if status != 200:
                return _json(data, status)
            inst = st.instances[data["new_contract"]]
            born = st.now() - float(body.get("age_s", 0.0))
            inst.created_at = inst.phase_at = inst.billed_to = born
            inst.start_date = born + float(body.get("skew_s", 0.0))
            st.tick()
            return _json({"id": inst.id, "label": inst.label, "dph_total": round(inst.gpu_dph + inst.disk_dph, 6),
                          "start_date": inst.start_date, "actual": inst.visible_status})

    # ---- serving --------------------------------------------------------------------------------
    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner = web.AppRunner(self.app())
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, host, port)
                loop.run_until_complete(site.start())
                real_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                self.url = f"http://{host}:{real_port}"
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-vast", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self.url

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self.state.shutdown()
