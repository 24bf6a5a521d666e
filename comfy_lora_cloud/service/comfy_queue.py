"""A ComfyUI's queue over its HTTP API: queue a prompt, follow it, fetch what it made.

The public routes every ComfyUI answers (reference/comfyui-contract.md §4): ``POST /prompt``,
``GET /history/{id}``, ``GET /queue``, ``GET /view``. The pack uses them on the ComfyUI it runs
in (the routes call back into their own server over loopback, the same path as the frontend's
Queue button) and on any other ComfyUI by URL (the CLI; a remote session's forwarded port).

A fresh ``httpx.AsyncClient`` per call: one :class:`ComfyQueue` may be used from several event
loops (ComfyUI's server loop, the CLI's), and a client is bound to the loop it first ran on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from ..errors import ComfyUIError, WorkflowRejected
from ..models import Record

MAX_ERROR_LINES = 12


@dataclass
class QueuedImage(Record):
    filename: str
    subfolder: str = ""
    type: str = "output"  # "output" (SaveImage) or "temp" (previews)
    node: str = ""

    @property
    def query(self) -> str:
        """The query string of ComfyUI's ``/view`` for this image."""
        return urlencode({"filename": self.filename, "subfolder": self.subfolder, "type": self.type})


@dataclass
class PromptStatus(Record):
    """Where one queued prompt is: ``queued``, ``running``, ``done``, ``failed`` or ``unknown``
    (not in the queue nor the history: that ComfyUI restarted, or the id is not its)."""

    prompt_id: str
    state: str
    images: list[QueuedImage] = field(default_factory=list)
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "unknown")


def describe_node_errors(error: Any, node_errors: Any) -> str:
    """ComfyUI's 400 answer to ``/prompt`` as lines a person can act on."""
    lines = []
    if isinstance(error, dict) and error.get("message"):
        lines.append(str(error["message"]))
    for nid, entry in (node_errors or {}).items() if isinstance(node_errors, dict) else ():
        if not isinstance(entry, dict):
            continue
        for err in entry.get("errors") or []:
            if isinstance(err, dict):
                detail = f": {err['details']}" if err.get("details") else ""
                lines.append(f"node {nid} ({entry.get('class_type', '?')}): {err.get('message', '?')}{detail}")
    return "\n".join(lines[:MAX_ERROR_LINES]) or "ComfyUI refused the workflow"


class ComfyQueue:
    """One ComfyUI, by base URL (``http://127.0.0.1:8188``)."""

    def __init__(self, url: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.transport = transport
        self.timeout = timeout

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, transport=self.transport, timeout=self.timeout,
                                 follow_redirects=False)

    async def _get(self, path: str) -> Any:
        try:
            async with self._client() as c:
                r = await c.get(path)
        except httpx.HTTPError as exc:
            raise ComfyUIError(f"ComfyUI at {self.url} did not answer: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise ComfyUIError(f"ComfyUI at {self.url} answered {r.status_code} to GET {path.split('?')[0]}")
        try:
            return r.json()
        except ValueError:
            raise ComfyUIError(f"ComfyUI at {self.url} sent something that is not JSON for {path}") from None

    async def submit(self, prompt: dict[str, Any], *, client_id: str | None = None,
                     extra_data: dict[str, Any] | None = None) -> str:
        """Queue an API-form prompt; returns its id. :class:`WorkflowRejected` when ComfyUI's
        validation refuses it (``.node_errors`` says where)."""
        body: dict[str, Any] = {"prompt": prompt}
        if client_id:
            body["client_id"] = client_id
        if extra_data:
            body["extra_data"] = extra_data
        try:
            async with self._client() as c:
                r = await c.post("/prompt", json=body)
        except httpx.HTTPError as exc:
            raise ComfyUIError(f"ComfyUI at {self.url} did not answer: {type(exc).__name__}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code == 400 and isinstance(data, dict):
            raise WorkflowRejected(describe_node_errors(data.get("error"), data.get("node_errors")),
                                   node_errors=data.get("node_errors") or {})
        if r.status_code != 200 or not isinstance(data, dict) or not isinstance(data.get("prompt_id"), str):
            raise ComfyUIError(f"ComfyUI at {self.url} answered {r.status_code} to POST /prompt")
        if data.get("node_errors"):
            raise WorkflowRejected(describe_node_errors(None, data["node_errors"]), node_errors=data["node_errors"])
        return data["prompt_id"]

    async def status(self, prompt_id: str) -> PromptStatus:
        history = await self._get(f"/history/{prompt_id}")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if isinstance(entry, dict):
            return _from_history(prompt_id, entry)
        queue = await self._get("/queue")
        for key, state in (("queue_running", "running"), ("queue_pending", "queued")):
            for item in queue.get(key) or [] if isinstance(queue, dict) else []:
                if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                    return PromptStatus(prompt_id, state)
        return PromptStatus(prompt_id, "unknown", error="this ComfyUI does not know the prompt (was it restarted?)")

    async def image(self, image: QueuedImage) -> bytes:
        try:
            async with self._client() as c:
                r = await c.get(f"/view?{image.query}")
        except httpx.HTTPError as exc:
            raise ComfyUIError(f"ComfyUI at {self.url} did not answer: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise ComfyUIError(f"ComfyUI at {self.url} has no image {image.filename!r} ({r.status_code})")
        return r.content


def _from_history(prompt_id: str, entry: dict[str, Any]) -> PromptStatus:
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    images = []
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
    for nid, out in outputs.items():
        for img in (out.get("images") or []) if isinstance(out, dict) else []:
            if isinstance(img, dict) and isinstance(img.get("filename"), str):
                images.append(QueuedImage(img["filename"], str(img.get("subfolder") or ""),
                                          str(img.get("type") or "output"), str(nid)))
    # the saved images first: a card shows the first one
    images.sort(key=lambda i: i.type != "output")
    if status.get("status_str") == "error":
        message = "the workflow failed"
        for event, data in status.get("messages") or []:
            if event == "execution_error" and isinstance(data, dict):
                message = f"{data.get('node_type', 'a node')}: {data.get('exception_message', '').strip()}"
            elif event == "execution_interrupted":
                message = "interrupted"
        return PromptStatus(prompt_id, "failed", images, message[:2000])
    if status.get("completed") or status.get("status_str") == "success":
        return PromptStatus(prompt_id, "done", images)
    return PromptStatus(prompt_id, "running", images)
