"""Workflows as a user gives them, made ready for ``/prompt``: load one, and set what a user sets
from outside the graph: the LoRA, the prompt, any ``NODE.INPUT=VALUE``. The one home of these
edits, for ``lora-cloud comfy run`` and the Remote Generate node.

A workflow comes in ComfyUI's API format (``{"<id>": {"class_type", "inputs", "_meta"}}``, what
Workflow > Export (API) saves), as saved from the canvas (``{"nodes": [...], "links": [...]}``,
what users have), or as one of the pack's templates by name (``service/templates/catalog.py``). The
canvas form needs the target ComfyUI's ``/object_info`` to become the API form
(``service/templates/convert.py``), so :func:`resolve_workflow` gives a :class:`Workflow`: the
workflow as given and its edits, made into the API form by :meth:`Workflow.api` once the caller
has that ComfyUI's node definitions (``Sessions.generate`` fetches them through the tunnel).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import jsonsafe
from ...errors import ConfigError
from ...models import validate_name
from .convert import Converted, is_canvas, to_api

LORA_FOLDER = "lora_cloud"  # where the pack keeps LoRAs under models/loras, here and on a session
CORE_LORA_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")
OUR_LORA_LOADERS = ("LoraCloudLoraLoader",)
TEXT_NODES = ("CLIPTextEncode", "CLIPTextEncodeFlux")
MAX_WORKFLOW_BYTES = 8 * 1024 * 1024


def parse_workflow(data: Any, where: str = "the workflow") -> dict[str, Any]:
    """``data`` (text or an already decoded object) as a workflow, checked: the API form, or the
    canvas form (:func:`~.workflow_convert.is_canvas`; converted later, against a ComfyUI)."""
    if isinstance(data, (str, bytes)):
        if len(data) > MAX_WORKFLOW_BYTES:
            raise ConfigError(f"{where} is over {MAX_WORKFLOW_BYTES // 2**20} MB")
        try:  # within bounds: a workflow nested 50,000 deep or with a 401-digit number is refused here
            data = jsonsafe.loads(data, max_bytes=MAX_WORKFLOW_BYTES)
        except ValueError as exc:
            raise ConfigError(f"{where} is not a workflow we can read: {exc}") from None
    elif jsonsafe.depth(data) > jsonsafe.MAX_DEPTH:  # a decoded one (a node input): the same bound
        raise ConfigError(f"{where} is nested deeper than {jsonsafe.MAX_DEPTH} levels")
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict) and "nodes" not in data:
        data = data["prompt"]  # a /prompt body
    if is_canvas(data):
        if not data["nodes"]:
            raise ConfigError(f"{where} is a canvas workflow with no nodes")
        return copy.deepcopy(data)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where} must be a workflow: a JSON object of nodes (ComfyUI's API format) or a "
                          "canvas workflow (nodes and links, as ComfyUI saves it)")
    for nid, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs", {}), dict):
            raise ConfigError(f"{where}: node {str(nid)[:40]!r} needs a class_type and an inputs object")
    return copy.deepcopy(data)


def load_workflow(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the workflow {p}: {exc.strerror}") from None
    return parse_workflow(text, str(p))


def _title(node: dict[str, Any]) -> str:
    meta = node.get("_meta")
    return str(meta.get("title") or "") if isinstance(meta, dict) else ""


def find_node(workflow: dict[str, Any], ref: str) -> str:
    """A node by id, by title (``_meta.title``) or by class type, when that names exactly one."""
    if ref in workflow:
        return ref
    for key in (_title, lambda n: n.get("class_type")):
        hits = [nid for nid, node in workflow.items() if key(node) == ref]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ConfigError(f"{ref!r} names {len(hits)} nodes ({', '.join(hits[:5])}); use a node id")
    raise ConfigError(f"no node {ref!r} in the workflow (give a node id, a title or a class type)")


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``NODE.INPUT=VALUE`` -> (node, input, value); VALUE is JSON when it parses (numbers,
    true/false, quoted text), else the text as is."""
    target, sep, raw = text.partition("=")
    node, dot, name = target.rpartition(".")
    if not sep or not dot or not node or not name:
        raise ConfigError(f"--set {text!r}: write NODE.INPUT=VALUE (e.g. 3.seed=42 or KSampler.steps=20)")
    try:
        value: Any = jsonsafe.loads(raw)
    except ValueError:  # not JSON, or JSON past our bounds: the text as it is
        value = raw
    return node.strip(), name.strip(), value


def set_input(workflow: dict[str, Any], node_ref: str, name: str, value: Any) -> str:
    nid = find_node(workflow, node_ref)
    inputs = workflow[nid].setdefault("inputs", {})
    current = inputs.get(name)
    if isinstance(current, list) and len(current) == 2 and isinstance(current[0], str):
        raise ConfigError(f"input {name!r} of node {nid} is a link from node {current[0]}; set that node instead")
    inputs[name] = value
    return nid


def set_lora(workflow: dict[str, Any], name: str, strength: float | None = None) -> list[str]:
    """Point every LoRA loader at the pack's LoRA ``name`` (ComfyUI's own loaders see it as
    ``lora_cloud/<name>.safetensors``); a workflow without one is refused."""
    validate_name(name, "LoRA name")
    hits = []
    for nid, node in workflow.items():
        cls = node.get("class_type")
        if cls in CORE_LORA_LOADERS:
            node["inputs"]["lora_name"] = f"{LORA_FOLDER}/{name}.safetensors"
        elif cls in OUR_LORA_LOADERS:
            node["inputs"]["lora_name"] = name
        else:
            continue
        if strength is not None:
            for key in ("strength_model", "strength_clip"):
                if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                    node["inputs"][key] = strength
        hits.append(nid)
    if not hits:
        raise ConfigError("the workflow has no LoRA loader (LoraLoader, LoraLoaderModelOnly or LoRA Cloud's loader) "
                          "to put the LoRA in")
    return hits


def _link(value: Any) -> str | None:
    return value[0] if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) else None


def set_prompt(workflow: dict[str, Any], text: str) -> str:
    """Put ``text`` in the positive prompt: the text node the sampler's ``positive`` (or a
    guider's ``conditioning``) input leads back to, else the one text node titled positive, else
    the only text node."""
    for node in workflow.values():
        inputs = node.get("inputs", {})
        start = _link(inputs.get("positive")) or (
            _link(inputs.get("conditioning")) if "Guider" in str(node.get("class_type")) else None)
        seen: set[str] = set()
        while start and start in workflow and start not in seen:
            seen.add(start)
            target = workflow[start]
            if target.get("class_type") in TEXT_NODES or "text" in target.get("inputs", {}):
                key = "text" if "text" in target["inputs"] else "t5xxl"
                if not _link(target["inputs"].get(key)):
                    target["inputs"][key] = text
                    if target.get("class_type") == "CLIPTextEncodeFlux" and "clip_l" in target["inputs"]:
                        target["inputs"]["clip_l"] = text
                    return start
            start = next((_link(v) for k, v in target.get("inputs", {}).items()
                          if k in ("conditioning", "conditioning_1", "positive") and _link(v)), None)
    texts = [nid for nid, n in workflow.items() if n.get("class_type") in TEXT_NODES]
    titled = [nid for nid in texts if "positive" in _title(workflow[nid]).lower()]
    pick = titled if len(titled) == 1 else texts if len(texts) == 1 else []
    if not pick:
        raise ConfigError("cannot tell which text node is the prompt: set it with --set NODE.text=...")
    workflow[pick[0]]["inputs"]["text"] = text
    return pick[0]


def prepare(workflow: dict[str, Any], *, lora: str | None = None, prompt: str | None = None,
            sets: list[str] | tuple[str, ...] = (), seed: int | None = None) -> dict[str, Any]:
    """A copy of ``workflow`` with the LoRA, the prompt, a seed and the ``NODE.INPUT=VALUE`` sets
    applied (in that order, so a set wins)."""
    wf = copy.deepcopy(workflow)
    if lora:
        set_lora(wf, lora)
    if prompt:
        set_prompt(wf, prompt)
    if seed is not None:
        for node in wf.values():
            for key in ("seed", "noise_seed"):
                if key in node.get("inputs", {}) and not _link(node["inputs"][key]):
                    node["inputs"][key] = seed
    for item in sets:
        set_input(wf, *parse_assignment(item))
    return wf


@dataclass
class Workflow:
    """A workflow as given (the API or the canvas form) and the edits :func:`prepare` makes once
    it is in the API form."""

    source: dict[str, Any]
    lora: str | None = None
    prompt: str | None = None
    seed: int | None = None
    sets: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # canvas nodes left out by the last conversion

    @property
    def needs_object_info(self) -> bool:
        """The canvas form: :meth:`api` needs the target ComfyUI's ``/object_info``."""
        return is_canvas(self.source)

    def api(self, object_info: dict[str, Any] | None = None) -> dict[str, Any]:
        """The API form with the edits applied; a canvas workflow is converted against
        ``object_info`` (the node definitions of the ComfyUI that will run it)."""
        if self.needs_object_info:
            if object_info is None:
                raise ConfigError("a canvas workflow needs the node definitions (/object_info) of the ComfyUI "
                                  "that runs it")
            converted: Converted = to_api(self.source, object_info)
            self.ignored = converted.ignored
            wf = converted.prompt
        else:
            wf = self.source
        return prepare(wf, lora=self.lora, prompt=self.prompt, seed=self.seed, sets=self.sets)


def resolve_workflow(source: str | dict[str, Any], *, lora: str | None = None, prompt: str | None = None,
                     seed: int | None = None, sets: list[str] | tuple[str, ...] = ()) -> Workflow:
    """What a node or the CLI was given, with its edits: workflow JSON (text or decoded) in the API
    or the canvas form, or the name of one of the pack's templates (``service/templates/catalog.py``
    fills in its LoRA and prompt; the seed and sets apply after). :meth:`Workflow.api` makes it
    ready for ``/prompt``."""
    if isinstance(source, dict):
        return Workflow(parse_workflow(source), lora, prompt, seed, list(sets))
    text = (source or "").strip()
    if not text:
        raise ConfigError("give a workflow: a template name, or workflow JSON (saved from ComfyUI, or exported "
                          "in its API format)")
    if text.startswith("{"):
        return Workflow(parse_workflow(text), lora, prompt, seed, list(sets))
    from .catalog import load_template

    return Workflow(load_template(text, lora=lora, prompt=prompt), seed=seed, sets=list(sets))
