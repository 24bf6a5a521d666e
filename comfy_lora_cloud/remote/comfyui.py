"""ComfyUI's API as a client sees it: queue a prompt, follow it, fetch its images
(``/prompt``, ``/history``, ``/view``, ``/queue``, the ``/ws`` progress events). The one ComfyUI
client of the pack: for a remote
session's ComfyUI through the tunnel (``service/sessions/control.py``) and for any ComfyUI by URL, the one
the pack runs in included (the LoRA tests of ``service/templates/catalog.py``).

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

A remote ComfyUI runs on a machine someone else owns, so its answers are untrusted input: every
body is read streamed and refused past a limit for its kind (:data:`MAX_ANSWER_BYTES`), JSON is
parsed by :func:`~..jsonsafe.loads` and checked for the shape this client reads (the records, the
limits and the shape checks are in :mod:`.comfyui_answers`), an image by
``/view`` is refused past :data:`MAX_VIEW_BYTES` and a prompt's images past
:data:`MAX_OUTPUT_IMAGES` / :data:`MAX_RESULT_BYTES` together. Anything malformed (not JSON, an
HTML page, the wrong types, a websocket message that is not JSON) is a
:class:`~..errors.ComfyUIError` saying which answer was wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp

from .. import jsonsafe
from ..errors import ComfyUIError, LoraCloudError, ObjectNotFound, TunnelError, WorkflowRejected
from .comfyui_answers import (
    MAX_ANSWER_BYTES, MAX_OUTPUT_IMAGES, MAX_RESULT_BYTES, MAX_SMALL_ANSWER_BYTES, MAX_VIEW_BYTES,
    MAX_WS_MESSAGE_BYTES, MiB, OutputImage, PromptResult, PromptStatus, completed, describe_node_errors, failure_of,
    history_entry_problem, images_of, is_progress_count, object_info_problem, queue_problem,
)

__all__ = [
    "MAX_ANSWER_BYTES", "MAX_OUTPUT_IMAGES", "MAX_RESULT_BYTES", "MAX_SMALL_ANSWER_BYTES", "MAX_VIEW_BYTES",
    "MAX_WS_MESSAGE_BYTES", "ComfyClient", "OutputImage", "PromptResult", "PromptStatus", "describe_node_errors",
    "failure_of",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str | None], Any]  # (value, max, node id)
_NETWORK_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError, asyncio.TimeoutError,
                   ConnectionError, aiohttp.ClientPayloadError)
_JSON_TYPES = ("application/json", "text/json")


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
    def malformed(self, path: str, why: str) -> ComfyUIError:
        """The error for an answer that is not what ComfyUI sends."""
        return ComfyUIError(f"{self.name} sent a malformed answer to {path.split('?')[0]}: {why}")

    async def _body(self, resp: aiohttp.ClientResponse, path: str, limit: int) -> bytearray:
        """The answer's body, read in chunks and refused (without reading on) past ``limit``."""
        length = resp.content_length
        if length is not None and length > limit:
            raise self.malformed(path, f"{length / MiB:.0f} MiB, more than the {limit / MiB:.0f} MiB such an "
                                       "answer may be")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(256 * 1024):
            body += chunk
            if len(body) > limit:
                raise self.malformed(path, f"over {limit / MiB:.0f} MiB, more than such an answer may be")
        return body

    def _unreachable(self, path: str, exc: BaseException) -> LoraCloudError:
        why = "the tunnel may be reconnecting, or ComfyUI is not running" if self.unreachable is TunnelError \
            else "is it running?"
        return self.unreachable(f"{self.name} did not answer {path.split('?')[0]} ({type(exc).__name__}): {why}")

    async def _json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """``(status, body)``: the body parsed as JSON when it says it is JSON (a malformed one is
        a :class:`ComfyUIError`), None when empty, else its first 300 characters as text. A
        successful answer with a body that is not JSON is malformed: ComfyUI answers JSON."""
        limit = MAX_ANSWER_BYTES.get("/" + path.split("?")[0].split("/")[1], MAX_SMALL_ANSWER_BYTES)
        try:
            async with self.http.request(method, self.base_url + path, **kwargs) as resp:
                body = await self._body(resp, path, limit)
                status, content_type = resp.status, resp.content_type
        except _NETWORK_ERRORS as exc:
            raise self._unreachable(path, exc) from None
        if not body.strip():
            return status, None
        if content_type in _JSON_TYPES:
            try:
                return status, jsonsafe.loads(body, max_bytes=limit)
            except ValueError as exc:
                if 200 <= status < 300:
                    raise self.malformed(path, f"not usable JSON ({exc})") from None
        elif 200 <= status < 300:
            raise self.malformed(path, f"{content_type or 'no content type'}, not JSON")
        return status, body[:300].decode("utf-8", "replace")

    async def ping(self) -> dict[str, Any]:
        """``/system_stats``: ComfyUI answers (TunnelError when it does not)."""
        status, body = await self._json("GET", "/system_stats")
        if status != 200:
            raise self.unreachable(f"{self.name} answered /system_stats with HTTP {status}")
        if not isinstance(body, dict):
            raise self.malformed("/system_stats", "not a JSON object")
        return body

    async def object_info(self, node: str | None = None) -> dict[str, Any]:
        status, body = await self._json("GET", "/object_info" + (f"/{quote(node)}" if node else ""))
        if status != 200:
            raise ComfyUIError(f"{self.name} answered /object_info with HTTP {status}")
        why = object_info_problem(body)
        if why:
            raise self.malformed("/object_info", why)
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
        if status != 200:
            raise ComfyUIError(f"{self.name} could not queue the workflow (HTTP {status}): {str(data)[:300]}")
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        if not isinstance(prompt_id, str) or not 0 < len(prompt_id) <= 200 or not prompt_id.isprintable():
            raise self.malformed("/prompt", "no prompt id")
        return prompt_id

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry once it ran (None while it is queued or running)."""
        path = f"/history/{quote(prompt_id)}"
        status, data = await self._json("GET", path)
        if status != 200:
            return None
        if not isinstance(data, dict):
            raise self.malformed(path, "not a JSON object")
        entry = data.get(prompt_id)
        if entry is None:
            return None
        why = history_entry_problem(entry)  # the shape failure_of and images_of read
        if why:
            raise self.malformed(path, why)
        return entry

    async def status(self, prompt_id: str) -> PromptStatus:
        """Where prompt ``prompt_id`` is (its history, else the queue), for a caller that polls.
        A prompt that finishes between the two reads is in neither: its history is read once
        more before it is called unknown."""
        entry = await self.history(prompt_id)
        if entry is None:
            status, queue = await self._json("GET", "/queue")
            why = queue_problem(queue) if status == 200 else None
            if why:
                raise self.malformed("/queue", why)
            for key, state in (("queue_running", "running"), ("queue_pending", "queued")):
                for item in queue.get(key, []) if status == 200 else []:
                    if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                        return PromptStatus(prompt_id, state)
            entry = await self.history(prompt_id)
        if entry is None:
            return PromptStatus(prompt_id, "unknown", error=f"{self.name} does not know the prompt (was it restarted?)")
        failure = failure_of(entry)
        state = "failed" if failure else "done" if completed(entry) else "running"
        return PromptStatus(prompt_id, state, images_of(entry), failure)

    async def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt if it runs, and drop it from the queue if it waits (best effort)."""
        for path, body in (("/interrupt", {"prompt_id": prompt_id}), ("/queue", {"delete": [prompt_id]})):
            with contextlib.suppress(LoraCloudError):
                await self._json("POST", path, json=body)

    async def view(self, image: OutputImage, max_bytes: int = MAX_VIEW_BYTES) -> bytes:
        """The image's bytes, refused past ``max_bytes`` (read no further) or when the answer is
        a page or JSON rather than a file."""
        params = {"filename": image.filename, "subfolder": image.subfolder, "type": image.type}
        path = f"/view ({image.filename})"
        try:
            async with self.http.get(self.base_url + "/view", params=params) as resp:
                if resp.status != 200:
                    raise ComfyUIError(f"{self.name} could not send {image.filename} (HTTP {resp.status})")
                if resp.content_type.startswith("text/") or resp.content_type in _JSON_TYPES:
                    raise self.malformed(path, f"{resp.content_type}, not an image file")
                data = await self._body(resp, path, max_bytes)
        except _NETWORK_ERRORS as exc:
            raise self.unreachable(f"the image {image.filename} did not arrive ({type(exc).__name__})") from None
        if not data:
            raise self.malformed(path, "an empty file")
        return bytes(data)

    # ---- the pack on the remote side ---------------------------------------------------------
    async def fetch_lora(self, name: str) -> dict[str, Any]:
        """Ask the remote pack to bring ``loras/<name>.safetensors`` into its ComfyUI now (the
        same route the sidebar's Download button uses, with the remote install's token)."""
        status, token = await self._json("GET", "/lora_cloud/api/token")
        if status == 404:
            raise ComfyUIError(f"{self.name} does not have the LoRA Cloud pack, so it cannot fetch LoRAs")
        if status != 200:
            raise ComfyUIError(f"the remote pack's token route answered HTTP {status}")
        header = token.get("header", "X-LoRA-Cloud-Token") if isinstance(token, dict) else None
        if not isinstance(token.get("token") if isinstance(token, dict) else None, str) \
                or not isinstance(header, str) or not header.isprintable() or not 0 < len(header) <= 100:
            raise self.malformed("/lora_cloud/api/token", "no token and header name")
        status, body = await self._json(
            "POST", f"/lora_cloud/api/loras/{quote(name, safe='')}/download", json={},
            headers={header: token["token"]})
        if status == 404:
            raise ObjectNotFound(f"no LoRA {name!r} in the bucket the remote session uses")
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else body
            raise ComfyUIError(f"the remote session could not fetch LoRA {name!r}: {str(message)[:300]}")
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
        images = images_of(entry)
        if len(images) > MAX_OUTPUT_IMAGES:
            raise self.malformed(f"/history/{prompt_id}", f"{len(images)} images, more than the "
                                                          f"{MAX_OUTPUT_IMAGES} one prompt may bring back")
        total = 0
        for image in images:
            image.data = await self._retrying(lambda image=image: self.view(image))
            total += len(image.data)
            if total > MAX_RESULT_BYTES:
                raise self.malformed(f"/history/{prompt_id}", f"images of over {MAX_RESULT_BYTES / MiB:.0f} MiB "
                                                              "together, more than one prompt may bring back")
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
            async with self.http.ws_connect(url, heartbeat=20, timeout=aiohttp.ClientWSTimeout(ws_close=5),
                                            max_msg_size=MAX_WS_MESSAGE_BYTES) as ws:
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
                    if msg.type is aiohttp.WSMsgType.ERROR and isinstance(msg.data, aiohttp.WebSocketError) \
                            and msg.data.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                        raise self.malformed("/ws", f"a message over {MAX_WS_MESSAGE_BYTES / MiB:.0f} MiB")
                    if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR,
                                    aiohttp.WSMsgType.CLOSE):
                        raise TunnelError(f"{self.name}'s websocket closed")
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        continue  # binary frames: previews
                    try:
                        event = jsonsafe.loads(msg.data, max_bytes=MAX_WS_MESSAGE_BYTES)
                    except ValueError as exc:
                        raise self.malformed("/ws", f"a message that is not usable JSON ({exc})") from None
                    if not isinstance(event, dict):
                        raise self.malformed("/ws", "a message that is not a JSON object")
                    data = event.get("data")
                    if not isinstance(data, dict) or data.get("prompt_id") not in (None, prompt_id):
                        continue
                    kind = event.get("type")
                    if kind == "progress" and progress is not None and data.get("prompt_id") == prompt_id:
                        value, top, node = data.get("value", 0), data.get("max", 0), data.get("node")
                        if not (is_progress_count(value) and is_progress_count(top) and (node is None or isinstance(node, str))):
                            raise self.malformed("/ws", "a progress event without a numeric value and max")
                        result = progress(int(value), int(top), node)
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
