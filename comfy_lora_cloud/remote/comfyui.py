"""ComfyUI's API as a client sees it: queue a prompt, follow it, fetch its images
(reference/comfyui-contract.md §2, §4). The one ComfyUI client of the pack: for a remote
session's ComfyUI through the tunnel (``service/sessions.py``) and for any ComfyUI by URL, the one
the pack runs in included (the LoRA tests of ``service/templates.py``).

:meth:`ComfyClient.run` queues one prompt under its own ``client_id`` and follows it over
``/ws`` (progress, executing, success, error, interrupted), checking ``/history/<id>`` as well,
so a missed event or a dropped connection only delays the answer: while the link is down (the
tunnel reconnects underneath) it keeps trying for ``give_up_s``, then the prompt is looked up
again. Cancelling the coroutine interrupts the prompt on the remote side and drops it from the
queue. :meth:`ComfyClient.status` says where a prompt queued earlier is, for callers that poll.
The pack's own routes on the remote side (``/lora_cloud/api/...``) are reached the same way:
:meth:`ComfyClient.fetch_lora` asks the remote pack to bring a LoRA from the bucket now.

One client per event loop: use it as ``async with ComfyClient(url) as client`` where the calls
are made (ComfyUI's server loop, a prompt's loop and the CLI's are different loops).

Errors: a refused workflow is a :class:`~..errors.WorkflowRejected` (with ComfyUI's per-node
answer), a failed prompt a :class:`~..errors.ComfyUIError` (with the node and ComfyUI's message);
a ComfyUI that does not answer is a :class:`~..errors.TunnelError` through a tunnel (where
:meth:`ComfyClient.run` waits for the link to come back), a :class:`~..errors.ComfyUIError` for
a ComfyUI by URL (``remote=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp

from ..errors import ComfyUIError, LoraCloudError, ObjectNotFound, TunnelError, WorkflowRejected
from ..models import Record

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str | None], Any]  # (value, max, node id)
_NETWORK_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError, asyncio.TimeoutError,
                   ConnectionError, aiohttp.ClientPayloadError)
MAX_ERROR_LINES = 12


@dataclass
class OutputImage(Record):
    """An image a prompt made, as ComfyUI's history names it (``data`` once fetched)."""

    filename: str
    subfolder: str = ""
    type: str = "output"  # "output" (SaveImage) or "temp" (previews)
    node: str = ""
    data: bytes = field(repr=False, default=b"")

    def to_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type, "node": self.node}


@dataclass
class PromptResult:
    prompt_id: str
    images: list[OutputImage]
    seconds: float


@dataclass
class PromptStatus(Record):
    """Where one queued prompt is: ``queued``, ``running``, ``done``, ``failed`` or ``unknown``
    (not in the queue nor the history: that ComfyUI restarted, or the id is not its)."""

    prompt_id: str
    state: str
    images: list[OutputImage] = field(default_factory=list)
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "unknown")


def describe_node_errors(body: Any) -> str:
    """ComfyUI's 400 answer to ``/prompt`` as lines a person can act on: the error, then each
    node's problems."""
    if not isinstance(body, dict):
        return str(body)[:500] or "ComfyUI refused the workflow"
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    lines = []
    if error.get("message") or error.get("type"):
        lines.append(str(error.get("message") or error.get("type")) + (f": {error['details']}" if error.get("details")
                                                                        else ""))
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
    for nid, entry in node_errors.items():
        for err in (entry.get("errors") or []) if isinstance(entry, dict) else []:
            if isinstance(err, dict):
                detail = f": {err['details']}" if err.get("details") else ""
                lines.append(f"node {nid} ({entry.get('class_type', '?')}): {err.get('message', '?')}{detail}")
    return "\n".join(lines[:MAX_ERROR_LINES]) or "ComfyUI refused the workflow"


class ComfyClient:
    """One ComfyUI at ``base_url``: by default a remote session's, through the tunnel
    (``http://127.0.0.1:<port>``); ``remote=False`` for any other (it is named by its URL, and
    not answering is a :class:`~..errors.ComfyUIError`)."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, give_up_s: float = 120.0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 still_there: Callable[[], Awaitable[None]] | None = None, check_every_s: float = 5.0,
                 remote: bool = True):
        self.base_url = base_url.rstrip("/")
        self.name = "the remote ComfyUI" if remote else f"ComfyUI at {self.base_url}"
        self.unreachable: type[LoraCloudError] = TunnelError if remote else ComfyUIError
        self.timeout = timeout
        self.give_up_s = give_up_s
        self.sleep = sleep
        # while the link is down: raises when the other side is gone for good (the session ended)
        self.still_there = still_there
        self.check_every_s = check_every_s
        self._checked = float("-inf")
        self._session: aiohttp.ClientSession | None = None

    async def _down(self, down_since: float, exc: TunnelError, what: str) -> None:
        """The link is down: give up after ``give_up_s``, or at once when the session is gone."""
        now = time.monotonic()
        if now - down_since > self.give_up_s:
            raise TunnelError(f"lost {self.name} for over {self.give_up_s:g} s {what}: {exc.message}") from None
        if self.still_there is not None and now - self._checked >= self.check_every_s:
            self._checked = now
            await self.still_there()

    async def __aenter__(self) -> "ComfyClient":
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use ComfyClient as an async context manager")
        return self._session

    # ---- plain calls -----------------------------------------------------------------------
    async def _json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self.http.request(method, self.base_url + path, **kwargs) as resp:
                text = await resp.text()
                try:
                    return resp.status, json.loads(text) if text else None
                except ValueError:
                    return resp.status, text
        except _NETWORK_ERRORS as exc:
            why = "the tunnel may be reconnecting, or ComfyUI is not running" if self.unreachable is TunnelError \
                else "is it running?"
            raise self.unreachable(f"{self.name} did not answer {path.split('?')[0]} ({type(exc).__name__}): "
                                   f"{why}") from None

    async def ping(self) -> dict[str, Any]:
        """``/system_stats``: ComfyUI answers (TunnelError when it does not)."""
        status, body = await self._json("GET", "/system_stats")
        if status != 200 or not isinstance(body, dict):
            raise self.unreachable(f"{self.name} answered /system_stats with HTTP {status}")
        return body

    async def object_info(self, node: str | None = None) -> dict[str, Any]:
        status, body = await self._json("GET", "/object_info" + (f"/{quote(node)}" if node else ""))
        if status != 200 or not isinstance(body, dict):
            raise ComfyUIError(f"{self.name} answered /object_info with HTTP {status}")
        return body

    async def queue_prompt(self, prompt: dict[str, Any], client_id: str | None = None,
                           extra_data: dict[str, Any] | None = None) -> str:
        """Queue an API-form prompt; returns its id. :class:`WorkflowRejected` when ComfyUI's
        validation refuses it (``.node_errors`` says where)."""
        body: dict[str, Any] = {"prompt": prompt}
        if client_id:
            body["client_id"] = client_id
        if extra_data:
            body["extra_data"] = extra_data
        status, data = await self._json("POST", "/prompt", json=body)
        if status == 400 or (status == 200 and isinstance(data, dict) and data.get("node_errors")):
            raise WorkflowRejected(f"{self.name} refused the workflow: {describe_node_errors(data)}",
                                   node_errors=(data.get("node_errors") if isinstance(data, dict) else None) or {})
        if status != 200 or not isinstance(data, dict) or not data.get("prompt_id"):
            raise ComfyUIError(f"{self.name} could not queue the workflow (HTTP {status}): {str(data)[:300]}")
        return str(data["prompt_id"])

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry once it ran (None while it is queued or running)."""
        status, data = await self._json("GET", f"/history/{quote(prompt_id)}")
        if status != 200 or not isinstance(data, dict):
            return None
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def status(self, prompt_id: str) -> PromptStatus:
        """Where prompt ``prompt_id`` is (its history, else the queue), for a caller that polls.
        A prompt that finishes between the two reads is in neither: its history is read once
        more before it is called unknown."""
        entry = await self.history(prompt_id)
        if entry is None:
            status, queue = await self._json("GET", "/queue")
            for key, state in (("queue_running", "running"), ("queue_pending", "queued")):
                for item in (queue.get(key) or []) if status == 200 and isinstance(queue, dict) else []:
                    if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                        return PromptStatus(prompt_id, state)
            entry = await self.history(prompt_id)
        if entry is None:
            return PromptStatus(prompt_id, "unknown", error=f"{self.name} does not know the prompt (was it restarted?)")
        failure = failure_of(entry)
        state = "failed" if failure else "done" if _completed(entry) else "running"
        return PromptStatus(prompt_id, state, _images_of(entry), failure)

    async def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt if it runs, and drop it from the queue if it waits (best effort)."""
        for path, body in (("/interrupt", {"prompt_id": prompt_id}), ("/queue", {"delete": [prompt_id]})):
            with contextlib.suppress(self.unreachable):
                await self._json("POST", path, json=body)

    async def view(self, image: OutputImage) -> bytes:
        params = {"filename": image.filename, "subfolder": image.subfolder, "type": image.type}
        try:
            async with self.http.get(self.base_url + "/view", params=params) as resp:
                if resp.status != 200:
                    raise ComfyUIError(f"{self.name} could not send {image.filename} (HTTP {resp.status})")
                return await resp.read()
        except _NETWORK_ERRORS as exc:
            raise self.unreachable(f"the image {image.filename} did not arrive ({type(exc).__name__})") from None

    # ---- the pack on the remote side ---------------------------------------------------------
    async def fetch_lora(self, name: str) -> dict[str, Any]:
        """Ask the remote pack to bring ``loras/<name>.safetensors`` into its ComfyUI now (the
        same route the sidebar's Download button uses, with the remote install's token)."""
        status, token = await self._json("GET", "/lora_cloud/api/token")
        if status == 404:
            raise ComfyUIError(f"{self.name} does not have the LoRA Cloud pack, so it cannot fetch LoRAs")
        if status != 200 or not isinstance(token, dict) or "token" not in token:
            raise ComfyUIError(f"the remote pack's token route answered HTTP {status}")
        status, body = await self._json(
            "POST", f"/lora_cloud/api/loras/{quote(name, safe='')}/download", json={},
            headers={token.get("header", "X-LoRA-Cloud-Token"): str(token["token"])})
        if status == 404:
            raise ObjectNotFound(f"no LoRA {name!r} in the bucket the remote session uses")
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else str(body)[:300]
            raise ComfyUIError(f"the remote session could not fetch LoRA {name!r}: {message}")
        return body

    # ---- one prompt, followed to the end ---------------------------------------------------
    async def run(self, prompt: dict[str, Any], *, progress: Progress | None = None,
                  extra_data: dict[str, Any] | None = None, client_id: str | None = None,
                  poll_s: float = 2.0) -> PromptResult:
        started = time.monotonic()
        cid = client_id or f"lora-cloud-{uuid.uuid4().hex}"
        prompt_id = await self.queue_prompt(prompt, cid, extra_data)
        try:
            entry = await self._follow(prompt_id, cid, progress, poll_s)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.interrupt(prompt_id)), 10)
            raise
        images = _images_of(entry)
        for image in images:
            image.data = await self._retrying(lambda image=image: self.view(image))
        return PromptResult(prompt_id, images, time.monotonic() - started)

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call`` again while the link is down, for up to ``give_up_s``."""
        down_since: float | None = None
        delay = 0.25
        while True:
            try:
                return await call()
            except TunnelError as exc:
                down_since = down_since or time.monotonic()
                await self._down(down_since, exc, "while fetching an image")
                await self.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _follow(self, prompt_id: str, cid: str, progress: Progress | None, poll_s: float) -> dict[str, Any]:
        down_since: float | None = None
        delay = 0.25
        while True:
            try:
                entry = await self.history(prompt_id)
                if entry is None:
                    entry = await self._listen(prompt_id, cid, progress, poll_s)
                failure = failure_of(entry)
                if failure:
                    raise ComfyUIError(f"prompt {prompt_id} failed on {self.name}: {failure}")
                return entry
            except TunnelError as exc:
                down_since = down_since or time.monotonic()
                await self._down(down_since, exc, f"while prompt {prompt_id} ran")
                log.info("remote ComfyUI unreachable (%s); trying again", exc.message)
                await self.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue

    async def _listen(self, prompt_id: str, cid: str, progress: Progress | None, poll_s: float) -> dict[str, Any]:
        """Events until the prompt ends; returns its history entry. TunnelError when the link drops."""
        url = self.base_url.replace("http://", "ws://", 1) + f"/ws?clientId={quote(cid)}"
        try:
            async with self.http.ws_connect(url, heartbeat=20, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                entry = await self.history(prompt_id)  # finished before we listened
                if entry is not None:
                    return entry
                while True:
                    try:
                        msg = await ws.receive(timeout=poll_s)
                    except asyncio.TimeoutError:  # quiet: an event may have gone to a socket we lost
                        entry = await self.history(prompt_id)
                        if entry is not None:
                            return entry
                        continue
                    if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR,
                                    aiohttp.WSMsgType.CLOSE):
                        raise TunnelError(f"{self.name}'s websocket closed")
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        continue  # binary frames: previews
                    try:
                        event = json.loads(msg.data)
                    except ValueError:
                        continue
                    data = event.get("data") if isinstance(event, dict) else None
                    if not isinstance(data, dict) or data.get("prompt_id") not in (None, prompt_id):
                        continue
                    kind = event.get("type")
                    if kind == "progress" and progress is not None and data.get("prompt_id") == prompt_id:
                        result = progress(int(data.get("value") or 0), int(data.get("max") or 0), data.get("node"))
                        if asyncio.iscoroutine(result):
                            await result
                    elif kind in ("execution_error", "execution_interrupted") and data.get("prompt_id") == prompt_id:
                        entry = await self._history_soon(prompt_id)
                        return entry or {"status": {"status_str": "error", "completed": False,
                                                    "messages": [[kind, data]]}, "outputs": {}}
                    elif (kind == "execution_success" or (kind == "executing" and data.get("node") is None)) \
                            and data.get("prompt_id") == prompt_id:
                        entry = await self._history_soon(prompt_id)
                        if entry is not None:
                            return entry
        except _NETWORK_ERRORS + (aiohttp.WSServerHandshakeError, aiohttp.ClientError) as exc:
            raise TunnelError(f"{self.name}'s websocket dropped ({type(exc).__name__})") from None

    async def _history_soon(self, prompt_id: str, tries: int = 20) -> dict[str, Any] | None:
        for _ in range(tries):
            entry = await self.history(prompt_id)
            if entry is not None:
                return entry
            await self.sleep(0.1)
        return None


def _status(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("status") if isinstance(entry.get("status"), dict) else {}


def _completed(entry: dict[str, Any]) -> bool:
    status = _status(entry)
    return bool(status.get("completed")) or status.get("status_str") == "success"


def failure_of(entry: dict[str, Any]) -> str | None:
    """Why a prompt in the history failed (the node and ComfyUI's message), or None."""
    status = _status(entry)
    if status.get("status_str") != "error" and status.get("completed") is not False:
        return None
    for kind, data in reversed(status.get("messages") or []):
        if kind == "execution_error" and isinstance(data, dict):
            return (f"node {data.get('node_id')} ({data.get('node_type')}): "
                    f"{str(data.get('exception_message', '')).strip()}")[:2000]
        if kind == "execution_interrupted":
            return "interrupted"
    return "the workflow failed"


def _images_of(entry: dict[str, Any]) -> list[OutputImage]:
    """The images in a history entry, the saved ones (``output``) before the previews."""
    out: list[OutputImage] = []
    for node, ui in (entry.get("outputs") or {}).items():
        if not isinstance(ui, dict):
            continue
        for item in ui.get("images") or []:
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                out.append(OutputImage(item["filename"], str(item.get("subfolder") or ""),
                                       str(item.get("type") or "output"), str(node)))
    out.sort(key=lambda i: i.type != "output")
    return out
