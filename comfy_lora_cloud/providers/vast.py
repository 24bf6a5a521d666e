"""vast.ai: :class:`VastClient` (the REST API over httpx) and :class:`VastProvider` (the Provider
verbs over our records).

The client retries 429 and 5xx with exponential backoff and full jitter, honouring
``Retry-After`` (up to a minute); it never retries the daily search quota. Create is not
idempotent on vast.ai, so a create whose answer is lost (timeout, 5xx after the server acted) is
resolved by listing instances by their label before anything is tried again: one call, at most
one instance. The API key travels only in the Authorization header and is registered with
``errors.redact``, so no error message or log line can carry it.

Answers are parsed defensively, here and nowhere else: paging stops after :data:`MAX_PAGES`
pages or at a ``next_token`` seen before (a listing that does not end is an error, never "these
are all the instances"); ``/charges/`` rows are checked by :func:`parse_charges` (an amount
that is not a finite, non-negative number is refused and reported, never booked); a listed
instance whose numbers are garbage keeps its id and label with those numbers read as 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx

from ..retry import RETRY_STATUSES, backoff
from ..settings import VAST_URL
from ..errors import OfferUnavailable, ProviderAPIError, ProviderError, redact, register_secret
from ..models import Instance, InstanceState, Offer
from .base import LABEL_PREFIX, Capability, LaunchSpec, OfferRequest, run_id_from_label, session_id_from_label

log = logging.getLogger(__name__)

DEFAULT_URL = VAST_URL
PAGE_LIMIT = 25  # the v1 listing's maximum page size
MAX_PAGES = 200  # 5000 instances: more is a listing whose next_token never ends
MAX_CHARGE_PAGES = 40  # 20,000 charge rows in the 32 days the ledger reads

Sleep = Callable[[float], Awaitable[None]]


def _encode_params(params: dict[str, Any]) -> dict[str, str]:
    """vast.ai JSON-decodes every query value: strings go as-is, the rest as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items() if v is not None}


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(data, dict):
        return str(data.get("msg") or data.get("message") or data.get("detail") or data.get("error") or data)
    return str(data)[:300]


def _is_search_quota(resp: httpx.Response) -> bool:
    if resp.status_code != 429:
        return False
    try:
        data = resp.json()
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("error") == "search_quota_exceeded"


class VastClient:
    """Thin async client for the vast.ai endpoints we use."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str = "",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ):
        if not api_key:
            from ..errors import ConfigError

            raise ConfigError("no vast.ai API key: run `lora-cloud config set vast_api_key ...`")
        register_secret(api_key)
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "comfy-lora-cloud"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "VastClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- plumbing -----------------------------------------------------------------------------
    def _delay(self, attempt: int, resp: httpx.Response | None) -> float:
        return backoff(attempt, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng,
                       retry_after=resp.headers.get("Retry-After") if resp is not None else None)

    async def _send_once(self, method: str, path: str, *, params: dict | None = None, body: Any = None) -> httpx.Response:
        kwargs: dict[str, Any] = {"params": _encode_params(params or {})}
        if method != "GET":
            kwargs["json"] = body if body is not None else {}
        return await self._http.request(method, path, **kwargs)

    async def _request(self, method: str, path: str, *, params: dict | None = None, body: Any = None) -> Any:
        """Send with retries (429/5xx/connection errors); return the decoded JSON body."""
        resp: httpx.Response | None = None
        for attempt in range(self.max_attempts):
            try:
                resp = await self._send_once(method, path, params=params, body=body)
            except httpx.TransportError as exc:
                if attempt + 1 >= self.max_attempts:
                    raise ProviderAPIError(f"vast.ai unreachable ({type(exc).__name__}) on {method} {path}") from None
                await self.sleep(self._delay(attempt, None))
                continue
            if resp.status_code in RETRY_STATUSES and not _is_search_quota(resp) and attempt + 1 < self.max_attempts:
                log.info("vast.ai %s %s -> %s, retrying", method, path, resp.status_code)
                await self.sleep(self._delay(attempt, resp))
                continue
            return self._decode(method, path, resp)
        raise AssertionError("unreachable")  # pragma: no cover

    def _decode(self, method: str, path: str, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            msg = redact(_message(resp), [self._key])
            if _is_search_quota(resp):
                msg = "vast.ai daily search quota exceeded (resets at UTC midnight)"
            raise ProviderAPIError(f"vast.ai {method} {path} failed ({resp.status_code}): {msg}",
                                   status=resp.status_code, body=redact(resp.text, [self._key]))
        try:
            return resp.json()
        except ValueError:
            raise ProviderAPIError(f"vast.ai {method} {path}: answer is not JSON", status=resp.status_code,
                                   body=redact(resp.text, [self._key])) from None

    # ---- offers -------------------------------------------------------------------------------
    async def search_offers(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        data = await self._request("POST", "/api/v0/bundles/", body=query)
        return list(data.get("offers") or [])

    # ---- instances ----------------------------------------------------------------------------
    async def create_instance(self, offer_id: int | str, *, image: str, label: str, disk_gb: float,
                              env: dict[str, str] | None = None, onstart: str | None = None,
                              price: float | None = None, runtype: str = "ssh") -> dict[str, Any]:
        """Rent ``offer_id``. Returns ``{"new_contract": id, "instance_api_key": key or None}``.

        Never doubles: after a lost answer (connection error, timeout, 5xx, 429) the instance is
        looked up by ``label`` first, and only if none exists is the create sent again.
        """
        if not label:
            raise ValueError("create_instance needs a unique label (it is how a lost answer is resolved)")
        body = {"client_id": "me", "image": image, "disk": disk_gb, "env": env or {}, "runtype": runtype,
                "onstart": onstart, "price": price, "label": label, "cancel_unavail": True,
                "target_state": "running", "image_login": None, "args": None}
        path = f"/api/v0/asks/{offer_id}/"
        for attempt in range(self.max_attempts):
            resp: httpx.Response | None = None
            try:
                resp = await self._send_once("PUT", path, body=body)
            except httpx.TransportError:
                resp = None
            if resp is not None and resp.status_code not in RETRY_STATUSES:
                if resp.status_code in (404, 410):
                    raise OfferUnavailable(f"offer {offer_id} is no longer available: {_message(resp)}")
                return self._decode("PUT", path, resp)
            existing = await self.list_instances(label=label)
            if existing:
                log.info("create answer lost; found instance %s by its label", existing[0]["id"])
                return {"success": True, "new_contract": existing[0]["id"], "instance_api_key": None,
                        "recovered": True}
            if attempt + 1 < self.max_attempts:
                await self.sleep(self._delay(attempt, resp))
        raise ProviderAPIError(f"vast.ai create on offer {offer_id} failed after {self.max_attempts} attempts",
                               status=resp.status_code if resp is not None else None)

    async def get_instance(self, instance_id: int | str) -> dict[str, Any] | None:
        try:
            data = await self._request("GET", f"/api/v0/instances/{instance_id}/", params={"owner": "me"})
        except ProviderAPIError as exc:
            if exc.status == 404:
                return None
            raise
        return data.get("instances") or None

    async def list_instances(self, *, label: str | None = None, statuses: list[str] | None = None) -> list[dict[str, Any]]:
        """All instances (the v1 listing, every page), optionally only those with ``label``."""
        filters: dict[str, Any] = {}
        if label is not None:
            filters["label"] = {"eq": label}
        if statuses:
            filters["actual_status"] = {"in": statuses}
        rows: list[dict[str, Any]] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"select_filters": filters, "limit": PAGE_LIMIT,
                                      "order_by": [{"col": "id", "dir": "asc"}]}
            if token:
                params["after_token"] = token
            data = await self._request("GET", "/api/v1/instances/", params=params)
            if not isinstance(data, dict) or not isinstance(data.get("instances") or [], list):
                raise ProviderAPIError("vast.ai instance listing has no 'instances' list")
            rows.extend(r for r in data.get("instances") or [] if isinstance(r, dict))
            token = data.get("next_token")
            if not token:
                return rows
            if not isinstance(token, str) or token in seen:
                raise ProviderAPIError("vast.ai instance listing did not end: its next_token repeats")
            seen.add(token)
        raise ProviderAPIError(f"vast.ai instance listing did not end after {MAX_PAGES} pages")

    async def _put_instance(self, instance_id: int | str, body: dict[str, Any]) -> None:
        await self._request("PUT", f"/api/v0/instances/{instance_id}/", body=body)

    async def set_label(self, instance_id: int | str, label: str) -> None:
        await self._put_instance(instance_id, {"label": label})

    async def stop(self, instance_id: int | str) -> None:
        await self._put_instance(instance_id, {"state": "stopped"})

    async def start(self, instance_id: int | str) -> None:
        await self._put_instance(instance_id, {"state": "running"})

    async def destroy(self, instance_id: int | str) -> bool:
        """Destroy; False when it was already gone."""
        try:
            await self._request("DELETE", f"/api/v0/instances/{instance_id}/")
        except ProviderAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def change_bid(self, instance_id: int | str, price: float) -> None:
        await self._request("PUT", f"/api/v0/instances/bid_price/{instance_id}/", body={"client_id": "me", "price": price})

    async def logs(self, instance_id: int | str, tail: int = 1000, *, polls: int = 30, interval: float = 0.3) -> str:
        """request_logs, then poll the result URL (no auth: it is a pre-signed object URL)."""
        data = await self._request("PUT", f"/api/v0/instances/request_logs/{instance_id}/", body={"tail": str(tail)})
        url = data.get("result_url")
        if not url:
            raise ProviderAPIError(f"vast.ai gave no log URL: {data.get('msg', '')}")
        for _ in range(polls):
            req = self._http.build_request("GET", url)
            del req.headers["Authorization"]  # never hand our key to the object store
            try:
                resp = await self._http.send(req)
                if resp.status_code == 200:
                    return resp.text
            except httpx.TransportError:
                pass
            await self.sleep(interval)
        raise ProviderAPIError(f"logs for instance {instance_id} were not ready in time")

    # ---- keys, account, billing ----------------------------------------------------------------
    async def ssh_keys(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "/api/v0/ssh/")
        return data if isinstance(data, list) else list(data.get("keys") or [])

    async def add_ssh_key(self, public_key: str) -> dict[str, Any]:
        return (await self._request("POST", "/api/v0/ssh/", body={"ssh_key": public_key})).get("key") or {}

    async def attach_ssh_key(self, instance_id: int | str, public_key: str) -> None:
        await self._request("POST", f"/api/v0/instances/{instance_id}/ssh/", body={"ssh_key": public_key})

    async def current_user(self) -> dict[str, Any]:
        data = await self._request("GET", "/api/v0/users/current")
        data.pop("api_key", None)
        return data

    async def charge_report(self, start: float, end: float, *, max_pages: int = MAX_CHARGE_PAGES) -> "ChargeReport":
        """Every charge row in ``[start, end]``, checked (:func:`parse_charges`), with what was refused.

        A page that is not a page, or paging that does not end (a ``next_token`` seen before, or
        more than ``max_pages``), leaves the report incomplete: its rows must not be booked as the
        whole bill."""
        params: dict[str, Any] = {"select_filters": {"day": {"gte": start, "lte": end}, "type": {"in": ["instance"]}},
                                  "limit": 500}
        report = ChargeReport()
        seen: set[str] = set()
        for _ in range(max_pages):
            data = await self._request("GET", "/api/v0/charges/", params=params)
            token = parse_charges(data, report)
            if not report.complete or not token:
                return report
            if token in seen:
                report.refuse(f"/charges/ paging did not end: next_token {token[:40]!r} repeats")
                return report
            seen.add(token)
            params["after_token"] = token
        report.refuse(f"/charges/ paging did not end after {max_pages} pages")
        return report

    async def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """The checked charge rows; ProviderAPIError when the answer could not be read whole."""
        report = await self.charge_report(start, end)
        if not report.complete:
            raise ProviderAPIError("vast.ai charges could not be read whole: " + "; ".join(report.problems))
        return report.rows


# ---- charges ----------------------------------------------------------------------------------
@dataclass
class ChargeReport:
    """What ``/charges/`` said, checked: ``rows`` to book, ``problems`` (refused rows and pages),
    and whether the answer was read whole (``complete``)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    complete: bool = True

    def refuse(self, problem: str, *, whole: bool = True) -> None:
        """Record a problem; ``whole`` marks the answer as not read whole."""
        log.warning("vast.ai charges: %s", problem)
        self.problems.append(problem)
        if whole:
            self.complete = False


def _usd(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def parse_charges(data: Any, report: ChargeReport) -> str | None:
    """Check one ``/charges/`` page into ``report``; returns its ``next_token``.

    A row is kept when it is an object with a ``source`` text and an ``amount`` that is a finite
    number of dollars, not negative (a negative charge would hide real spend from the month
    budget). When one row of an instance is refused, all of that instance's rows are left out:
    booking part of a bill would read as the provider billing less than we estimated."""
    if not isinstance(data, dict):
        report.refuse(f"the answer is a JSON {type(data).__name__}, not an object")
        return None
    results = data.get("results")
    if results is None:
        results = []
    if not isinstance(results, list):
        report.refuse(f"'results' is a {type(results).__name__}, not a list")
        return None
    refused: set[str] = set()
    for i, row in enumerate(results):
        source = row.get("source") if isinstance(row, dict) else None
        if not isinstance(source, str):
            report.refuse(f"row {i} has no source", whole=False)
            continue
        amount = _usd(row.get("amount"))
        if amount is None:
            refused.add(source)
            report.refuse(f"{source[:60]}: amount {str(row.get('amount'))[:40]!r} refused "
                          "(not a finite, non-negative number)", whole=False)
            continue
        report.rows.append({**row, "amount": amount})
    if refused:
        report.rows = [r for r in report.rows if r["source"] not in refused]
    token = data.get("next_token")
    if token is None or token == "":
        return None
    if not isinstance(token, str):
        report.refuse(f"next_token {str(token)[:40]!r} is not text")
        return None
    return token


# ---- records ----------------------------------------------------------------------------------
_STATES = {None: InstanceState.CREATING, "created": InstanceState.CREATING, "loading": InstanceState.LOADING,
           "running": InstanceState.RUNNING, "stopped": InstanceState.STOPPED, "frozen": InstanceState.STOPPED,
           "exited": InstanceState.EXITED, "offline": InstanceState.OFFLINE, "unknown": InstanceState.UNKNOWN,
           "rebooting": InstanceState.LOADING, "scheduling": InstanceState.LOADING}
_FATAL_MARKERS = ("OCI runtime create failed", "Error response from daemon", "error pulling")


def offer_from_vast(row: dict[str, Any], interruptible: bool = False) -> Offer:
    return Offer(
        id=row["id"], gpu_name=row.get("gpu_name", ""), num_gpus=int(row.get("num_gpus") or 1),
        gpu_ram_gb=float(row.get("gpu_ram") or 0) / 1000.0, cpu_ram_gb=float(row.get("cpu_ram") or 0) / 1000.0,
        disk_gb=float(row.get("disk_space") or 0), dph_total=float(row.get("dph_total") or 0),
        storage_cost_per_gb_month=float(row.get("storage_cost") or 0),
        inet_down_mbps=float(row.get("inet_down") or 0), inet_up_mbps=float(row.get("inet_up") or 0),
        reliability=float(row.get("reliability2") or row.get("reliability") or 0),
        verified=bool(row.get("verified", row.get("verification") == "verified")),
        interruptible=interruptible or bool(row.get("is_bid")), min_bid=row.get("min_bid"),
        cuda_max_good=row.get("cuda_max_good"), geolocation=str(row.get("geolocation") or ""), provider="vast",
        raw=row,
    )


def _number(value: Any, default: float = 0.0) -> float:
    """A finite float, or ``default`` for anything else (None, text, NaN, inf)."""
    if isinstance(value, bool):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def instance_from_vast(row: dict[str, Any]) -> Instance:
    """Our record of one listed instance. Only ``id`` is required; a number that is not one
    reads as 0 (the instance stays visible to reconcile and the watchdog)."""
    status = row.get("actual_status")
    state = _STATES.get(status, InstanceState.UNKNOWN) if isinstance(status, (str, type(None))) \
        else InstanceState.UNKNOWN
    msg = str(row.get("status_msg") or "")
    if state is InstanceState.CREATING and any(m in msg for m in _FATAL_MARKERS):
        state = InstanceState.EXITED  # stuck for good: dstack treats this as fatal
    price = row.get("search") if isinstance(row.get("search"), dict) else {}
    disk_hour = _number(price.get("diskHour"))
    ssh_port = int(_number(row.get("ssh_port"))) or None
    return Instance(
        id=str(row["id"]), provider="vast", label=str(row.get("label") or ""), state=state,
        intended_state=str(row.get("intended_status") or "running"), gpu_name=str(row.get("gpu_name") or ""),
        num_gpus=int(_number(row.get("num_gpus"), 1.0)) or 1, dph_total=_number(row.get("dph_total")),
        storage_dph=disk_hour, created_at=_number(row.get("start_date")), started_at=None,
        ssh_host=row.get("ssh_host"), ssh_port=ssh_port,
        status_msg=msg, interruptible=bool(row.get("is_bid")), run_id=run_id_from_label(row.get("label")), raw=row,
        session_id=session_id_from_label(row.get("label")),
    )


def offer_query(req: OfferRequest) -> dict[str, Any]:
    """The vast.ai filter object for ``req`` (reference §3)."""
    q: dict[str, Any] = {"rentable": {"eq": True}, "external": {"eq": False}, "rented": {"eq": False},
                         "num_gpus": {"eq": req.num_gpus}, "type": "bid" if req.interruptible else "on-demand",
                         "order": [["dph_total", "asc"]], "limit": req.limit}
    if req.verified is not None:
        q["verified"] = {"eq": req.verified}
    if req.gpu_names:
        q["gpu_name"] = {"in": list(req.gpu_names)}
    if req.min_vram_gb:
        q["gpu_ram"] = {"gte": req.min_vram_gb * 1000}
    if req.min_ram_gb:
        q["cpu_ram"] = {"gte": req.min_ram_gb * 1000}
    if req.min_disk_gb:
        q["disk_space"] = {"gte": req.min_disk_gb}
    if req.min_reliability:
        q["reliability"] = {"gte": req.min_reliability}
    if req.max_dph is not None:
        q["dph_total"] = {"lte": req.max_dph}
    if req.min_inet_down_mbps:
        q["inet_down"] = {"gte": req.min_inet_down_mbps}
    if req.min_cuda is not None:
        q["cuda_max_good"] = {"gte": req.min_cuda}
    if req.regions:
        q["geolocation"] = {"in": list(req.regions)}
    if req.allocated_storage_gb:
        q["allocated_storage"] = req.allocated_storage_gb
    return q


class VastProvider:
    """The Provider verbs on vast.ai."""

    name = "vast"
    capabilities = frozenset({Capability.STOP, Capability.INTERRUPTIBLE, Capability.LOGS, Capability.SSH,
                              Capability.SELF_DESTROY, Capability.BILLING})

    def __init__(self, client: VastClient):
        self.client = client

    async def search(self, req: OfferRequest) -> list[Offer]:
        rows = await self.client.search_offers(offer_query(req))
        return [offer_from_vast(r, req.interruptible) for r in rows]

    async def launch(self, offer: Offer, spec: LaunchSpec) -> Instance:
        env = dict(spec.env)
        for port in spec.ports:
            env[f"-p {port}:{port}"] = "1"
        price = spec.bid
        if spec.interruptible and price is None:
            price = float(offer.min_bid or offer.dph_total)
        created = await self.client.create_instance(
            offer.id, image=spec.image, label=spec.label, disk_gb=spec.disk_gb, env=env, onstart=spec.onstart,
            price=price if spec.interruptible else None, runtype=spec.runtype)
        iid = created.get("new_contract")
        if iid is None:
            raise ProviderError(f"vast.ai accepted the create on offer {offer.id} but returned no instance id")
        try:
            row = await self.client.get_instance(iid)
        except ProviderAPIError:  # the instance exists; a failed read must not fail the launch
            row = None
        if row is None:
            return Instance(id=str(iid), label=spec.label, state=InstanceState.CREATING, gpu_name=offer.gpu_name,
                            dph_total=offer.dph_total, run_id=run_id_from_label(spec.label),
                            session_id=session_id_from_label(spec.label),
                            interruptible=spec.interruptible)
        return instance_from_vast(row)

    async def get(self, instance_id: str) -> Instance | None:
        row = await self.client.get_instance(instance_id)
        return instance_from_vast(row) if row else None

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        rows = await self.client.list_instances()
        out = []
        for r in rows:
            if not str(r.get("label") or "").startswith(label_prefix):
                continue
            if r.get("id") in (None, ""):
                log.warning("vast.ai listed an instance without an id (label %r); skipped", r.get("label"))
                continue
            out.append(instance_from_vast(r))
        return out

    async def stop(self, instance_id: str) -> None:
        await self.client.stop(instance_id)

    async def destroy(self, instance_id: str) -> bool:
        existed = await self.client.destroy(instance_id)
        if await self.client.get_instance(instance_id) is not None:
            raise ProviderError(f"instance {instance_id} still exists after destroy")
        return existed

    async def logs(self, instance_id: str, tail: int = 1000) -> str:
        return await self.client.logs(instance_id, tail)

    async def ensure_ssh_key(self, public_key: str) -> None:
        """Register ``public_key`` with the account (once): instances created afterwards accept it."""
        wanted = public_key.split()[:2]
        for key in await self.client.ssh_keys():
            text = str(key.get("public_key") or key.get("key") or "") if isinstance(key, dict) else ""
            if text.split()[:2] == wanted:
                return
        await self.client.add_ssh_key(public_key.strip())

    async def attach_ssh_key(self, instance_id: str, public_key: str) -> None:
        """Add ``public_key`` to a running instance (account keys reach only instances made after them)."""
        await self.client.attach_ssh_key(instance_id, public_key.strip())


def client_from_settings(settings: Any, **kwargs: Any) -> VastClient:
    """A client for the configured URL and key (ConfigError when no key is set)."""
    return VastClient(settings.vast_url, settings.secret("vast_api_key") or "", **kwargs)
