"""What a ComfyUI answers, as :class:`~.comfyui.ComfyClient` reads it: the records it returns
(:class:`OutputImage`, :class:`PromptResult`, :class:`PromptStatus`), the most each answer may
be, and the checks of each answer's shape.

A remote ComfyUI runs on a machine someone else owns, so its answers are untrusted input. The
checks here say why an answer is not one ComfyUI writes (``..._problem`` functions return the
reason, or None); the client turns a reason into a :class:`~..errors.ComfyUIError` naming the
answer. What passed the checks is then read by the functions below without a second guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import Record

MAX_ERROR_LINES = 12
MAX_ERROR_LINE = 500

MiB = 1024 * 1024
# The most each answer may be. A real /object_info (478 core nodes, a dozen packs, long model
# lists) is 2-4 MB; one prompt's /history entry holds its API prompt and the canvas workflow
# (tens to hundreds of KB); /queue every waiting prompt's. Past these it is not ComfyUI talking.
MAX_ANSWER_BYTES: dict[str, int] = {"/object_info": 32 * MiB, "/history": 8 * MiB, "/queue": 16 * MiB}
MAX_SMALL_ANSWER_BYTES = 4 * MiB  # /prompt, /system_stats, the pack's routes, error pages
MAX_VIEW_BYTES = 64 * MiB  # one output image: a 16-megapixel PNG of noise is ~50 MB
MAX_OUTPUT_IMAGES = 256  # one prompt's images (a big batch is a few dozen)
MAX_RESULT_BYTES = 512 * MiB  # all of one prompt's images together, held in memory
MAX_WS_MESSAGE_BYTES = 4 * MiB  # ComfyUI's events are small; previews come as binary frames
MAX_FILE_NAME = 255
MAX_PROGRESS = 10**9  # steps of one progress bar; past this it is not a count
_IMAGE_KINDS = ("output", "temp", "input")


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
        errors = entry.get("errors") if isinstance(entry, dict) else None
        for err in errors if isinstance(errors, list) else []:
            if isinstance(err, dict):
                detail = f": {err['details']}" if err.get("details") else ""
                lines.append(f"node {nid} ({entry.get('class_type', '?')}): {err.get('message', '?')}{detail}")
    # each line cut: a remote's answer may be megabytes, a message is for a person
    return "\n".join(line[:MAX_ERROR_LINE] for line in lines[:MAX_ERROR_LINES]) or "ComfyUI refused the workflow"



def object_info_problem(body: Any) -> str | None:
    """Why ``/object_info`` lacks the shape the workflow converter reads (an object of node
    definitions, each an object whose ``input`` and ``input_order`` hold objects and lists), or
    None."""
    if not isinstance(body, dict):
        return "not a JSON object"
    for name, definition in body.items():
        inputs = definition.get("input", {}) if isinstance(definition, dict) else None
        order = definition.get("input_order", {}) if isinstance(definition, dict) else None
        if not (isinstance(inputs, dict) and isinstance(order, dict)
                and all(isinstance(v, dict) for v in inputs.values())
                and all(isinstance(v, list) for v in order.values())):
            return f"the definition of {str(name)[:80]!r} is not one ComfyUI writes"
    return None


def history_entry_problem(entry: Any) -> str | None:
    """Why a history entry lacks the shape :func:`failure_of` and :func:`images_of` read, or None."""
    if not isinstance(entry, dict):
        return "the prompt's entry is not a JSON object"
    status, outputs = entry.get("status", {}), entry.get("outputs", {})
    if not isinstance(status, dict) or not isinstance(outputs, dict):
        return "'status' and 'outputs' must be JSON objects"
    messages = status.get("messages", [])
    if not isinstance(messages, list) or not all(
            isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) for m in messages):
        return "'status.messages' must be a list of [event, data] pairs"
    for node, ui in outputs.items():
        images = ui.get("images", []) if isinstance(ui, dict) else None
        if not isinstance(images, list):
            return f"the output of node {str(node)[:40]!r} is not an object with a list of images"
        for item in images:
            why = _bad_image_item(item)
            if why:
                return f"an image of node {str(node)[:40]!r}: {why}"
    return None


def queue_problem(queue: Any) -> str | None:
    """Why a ``/queue`` answer lacks its two lists, or None."""
    if not (isinstance(queue, dict) and all(isinstance(queue.get(k, []), list)
                                            for k in ("queue_running", "queue_pending"))):
        return "'queue_running' and 'queue_pending' must be lists"
    return None


def _status(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("status") if isinstance(entry.get("status"), dict) else {}


def completed(entry: dict[str, Any]) -> bool:
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


def is_progress_count(value: Any) -> bool:
    """A progress number (jsonsafe already refused NaN and infinities)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_PROGRESS


def _bad_image_item(item: Any) -> str | None:
    """Why an entry of an output's ``images`` is not one ComfyUI writes, or None. ComfyUI names
    an output file by its name alone (folders go in ``subfolder``), so a name with a separator,
    ``..`` or a control character is a trick, not an image."""
    if not isinstance(item, dict):
        return "not a JSON object"
    name, subfolder, kind = item.get("filename"), item.get("subfolder") or "", item.get("type") or "output"
    if not isinstance(name, str) or not 0 < len(name) <= MAX_FILE_NAME:
        return "no file name"
    if "/" in name or "\\" in name or name in (".", "..") or not name.isprintable():
        return f"the file name {name[:80]!r} is not a plain file name"
    if not isinstance(subfolder, str) or len(subfolder) > 1024 or not subfolder.isprintable():
        return "the subfolder is not a folder name"
    if kind not in _IMAGE_KINDS:
        return f"the type {str(kind)[:20]!r} is not one of {', '.join(_IMAGE_KINDS)}"
    return None


def images_of(entry: dict[str, Any]) -> list[OutputImage]:
    """The images in a history entry, the saved ones (``output``) before the previews."""
    out: list[OutputImage] = []
    for node, ui in (entry.get("outputs") or {}).items():
        if not isinstance(ui, dict):
            continue
        for item in ui.get("images") or []:
            if _bad_image_item(item) is None:
                out.append(OutputImage(item["filename"], item.get("subfolder") or "", item.get("type") or "output",
                                       str(node)))
    out.sort(key=lambda i: i.type != "output")
    return out
