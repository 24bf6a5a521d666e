"""vast.ai's REST API over httpx: :class:`VastClient`.

The client retries 429 and 5xx with exponential backoff and full jitter, honouring
``Retry-After`` (up to a minute); it never retries the daily search quota. Create is not
idempotent on vast.ai, so a create whose answer is lost (timeout, 5xx after the server acted) is
resolved by listing instances by their label before anything is tried again: one call, at most
one instance. The API key travels only in the Authorization header and is registered with
``errors.redact``, so no error message or log line can carry it.

Paging stops after :data:`MAX_PAGES` pages or at a ``next_token`` seen before (a listing that
does not end is an error, never "these are all the instances"); ``/charges/`` pages are checked
by :func:`~.vast_records.parse_charges`. The client returns vast.ai's rows; turning them into our
records is :mod:`.vast_records`'s work.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import ssl
from typing import Any, Awaitable, Callable

import httpx

from ..errors import ConfigError, OfferUnavailable, ProviderAPIError, redact, register_secret
from ..retry import RETRY_STATUSES, backoff
from ..settings import VAST_URL
from .vast_records import ChargeReport, parse_charges


@functools.lru_cache(maxsize=4)
def _tls(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()  # reads SSL_CERT_FILE / SSL_CERT_DIR itself, else certifi's bundle


def tls_context() -> ssl.SSLContext:
    """One TLS context per process (per CA setting): building one loads the CA bundle, 50-90 ms
    of CPU, and each use of the provider makes a fresh client (a client is bound to the loop it
    first ran on), which would otherwise pay it every time, on the pack's loop or ComfyUI's."""
    return _tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))

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
            base_url=self.base_url, transport=transport, timeout=timeout, verify=tls_context(),
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

    async def charge_report(self, start: float, end: float, *, max_pages: int = MAX_CHARGE_PAGES) -> ChargeReport:
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
