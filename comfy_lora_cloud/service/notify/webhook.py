"""The webhook channel: a POST of the notice to ``webhook_url``, to an address that was checked.

One attempt is one exchange under ONE deadline (``WebhookPolicy.timeout_s``): resolving the
name, connecting, sending and reading the whole answer (at most :data:`MAX_ANSWER` bytes). httpx's
own timeouts are per read, so a receiver that trickles a byte every few seconds would hold an
attempt for ever; here the attempt is cancelled when the deadline passes, whatever the receiver
does. Failed attempts are retried on connection errors, timeouts, 408 and the statuses of the
project's retry policy (:mod:`comfy_lora_cloud.retry`: 429 and 5xx), waiting its backoff (with
``Retry-After`` honoured) between them; any other answer is final.

Where it may go (:mod:`comfy_lora_cloud.addresses`): every address the host resolves to is
checked, and the connection goes to the checked address itself (the URL's host is kept for the
``Host`` header and for TLS: SNI and the certificate check), so a name that answers differently a
moment later (DNS rebinding) cannot steer the request elsewhere. For the same reason the request
goes direct, never through an ``HTTP(S)_PROXY`` from the environment (a proxy would resolve the
name again on its side).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ...addresses import address_problem, literal_ip
from ...retry import RETRY_STATUSES, backoff
from .notices import Notice

USER_AGENT = "comfy-lora-cloud-notify/1"
SIGNATURE_HEADER = "X-LoRA-Cloud-Signature"
TIMESTAMP_HEADER = "X-LoRA-Cloud-Timestamp"
DELIVERY_HEADER = "X-LoRA-Cloud-Delivery"
EVENT_HEADER = "X-LoRA-Cloud-Event"
MAX_ANSWER = 64 * 1024  # a receiver's answer is read this far, never more (only its status matters)
RETRY = RETRY_STATUSES | {408}  # 408: the receiver timed out reading us; the same request may pass

Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses; blocking, like getaddrinfo


@dataclass
class WebhookPolicy:
    attempts: int = 5
    base_delay_s: float = 2.0  # the backoff's base and cap (retry.backoff: full jitter)
    max_delay_s: float = 60.0
    timeout_s: float = 10.0  # the whole attempt: resolve, connect, send, read the answer


class WebhookRefused(Exception):
    """The URL's host is an address no webhook may reach (final: not retried)."""


def webhook_body(notice: Notice, fmt: str) -> bytes:
    """The body for ``webhook_format``: the stable schema, or what Slack / Discord expect."""
    if fmt == "slack":
        payload: dict[str, Any] = {"text": f"*{notice.title}*\n{notice.message}"}
    elif fmt == "discord":
        payload = {"content": f"**{notice.title}**\n{notice.message}"[:2000], "username": "LoRA Cloud"}
    else:
        payload = notice.to_dict()
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``"<timestamp>." + body``): what a receiver checks."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _resolve(resolve: Resolver, host: str, port: int) -> list[str]:
    """``resolve`` on a thread of its own, so the attempt's deadline also bounds a resolver that
    hangs: the thread is a daemon the deadline abandons, never one that holds the process."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[str]] = loop.create_future()

    def settle(result: list[str] | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result or [])

    def work() -> None:
        try:
            result, error = resolve(host, port), None
        except Exception as exc:  # noqa: BLE001 - handed to the attempt, which reports it
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the attempt ended (its deadline) and its loop is closed
            pass

    threading.Thread(target=work, name="lora-cloud-webhook-dns", daemon=True).start()
    return await done


async def _checked_addresses(url: Any, *, allow_private: bool, resolve: Resolver) -> list[str]:
    host = url.host
    ip = literal_ip(host)
    if ip is not None:
        addresses = [str(ip)]
    else:
        try:
            addresses = await _resolve(resolve, host, url.port or (443 if url.scheme == "https" else 80))
        except OSError as exc:
            raise OSError(f"cannot resolve the webhook's host ({type(exc).__name__})") from None
        if not addresses:
            raise OSError("the webhook's host resolves to no address")
    for address in addresses:  # one forbidden answer refuses the name: it is not one we may call
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            how = "the webhook's address" if ip is not None else "the webhook's host resolves to it"
            raise WebhookRefused(f"{problem} ({how})")
    return addresses


async def _exchange(url_text: str, body: bytes, headers: dict[str, str], *, allow_private: bool,
                    resolve: Resolver, transport: Any) -> tuple[int, str | None]:
    """One POST to a checked address: ``(status, Retry-After)`` once the whole answer is in."""
    import httpx

    url = httpx.URL(url_text)
    addresses = await _checked_addresses(url, allow_private=allow_private, resolve=resolve)
    host_header = url.netloc.decode("ascii")
    last: Exception | None = None
    # the deadline is the caller's (asyncio.wait_for); httpx's own timeouts only bound each step
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, transport=transport,
                                 timeout=httpx.Timeout(None)) as client:
        for address in addresses:
            pinned = url.copy_with(host=str(ipaddress.ip_address(address.split("%", 1)[0])))
            request = client.build_request("POST", pinned, content=body, headers={**headers, "Host": host_header},
                                           extensions={"sni_hostname": url.host})
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:  # the next address of the name, if it has one
                last = exc
                continue
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER:
                        break
            finally:
                await response.aclose()
            return response.status_code, response.headers.get("Retry-After")
    raise last or OSError("no address to connect to")


def post_webhook(url: str, notice: Notice, *, fmt: str = "json", secret: str | None = None,
                 policy: WebhookPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 transport: Any = None, clock: Callable[[], float] = time.time, allow_private: bool = False,
                 resolve: Resolver = system_resolve, rng: random.Random | None = None) -> tuple[bool, str]:
    """POST the notice, retrying with backoff; ``(delivered, what happened)``. Blocks (each
    attempt runs its own event loop): call it from the webhook channel's thread, never from an
    event loop. ``transport`` is an httpx async transport (tests)."""
    import httpx

    policy = policy or WebhookPolicy()
    body = webhook_body(notice, fmt)
    last = "not tried"
    for attempt in range(policy.attempts):
        timestamp = str(int(clock()))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, DELIVERY_HEADER: notice.id,
                   EVENT_HEADER: notice.kind, TIMESTAMP_HEADER: timestamp}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        retry_after: str | None = None
        try:
            status, retry_after = asyncio.run(asyncio.wait_for(
                _exchange(url, body, headers, allow_private=allow_private, resolve=resolve, transport=transport),
                policy.timeout_s))
        except WebhookRefused as exc:
            return False, f"refused: {exc}"  # where it points does not change by asking again
        except asyncio.TimeoutError:
            last = f"attempt {attempt + 1}: no complete answer within {policy.timeout_s:g} s (cut off)"
        except (httpx.HTTPError, OSError) as exc:
            last = f"attempt {attempt + 1}: {exc if isinstance(exc, OSError) and exc.args else type(exc).__name__}"
        else:
            if 200 <= status < 300:
                return True, f"HTTP {status} after {attempt + 1} attempt(s)" + (f"; before: {last}" if attempt else "")
            last = f"attempt {attempt + 1}: HTTP {status}"
            if status not in RETRY:
                return False, last  # the receiver refuses it: asking again changes nothing
        if attempt + 1 < policy.attempts:
            sleep(backoff(attempt, base=policy.base_delay_s, cap=policy.max_delay_s, retry_after=retry_after,
                          rng=rng))
    return False, last
