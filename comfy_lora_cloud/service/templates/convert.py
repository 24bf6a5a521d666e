"""A workflow saved from ComfyUI's canvas (the UI form: ``{"nodes": [...], "links": [...]}``)
turned into the API form ``POST /prompt`` takes, the way the frontend's ``graphToPrompt`` turns
it, against the target ComfyUI's ``GET /object_info``. The one home of this conversion; callers
reach it through ``service/templates/workflow_api.py`` (:class:`~.workflow_api.Workflow`), and
``Sessions.generate`` fetches the remote ComfyUI's ``/object_info`` through the tunnel for it.

The rules (each the frontend's):

- a link becomes ``[origin_id, origin_slot]`` on the input it feeds, by the input's name (inputs a
  pack's JavaScript added, such as KJNodes' ``image_3``, included);
- ``widgets_values`` (a list) goes onto the node's widget inputs in the order ``/object_info``
  lists them (``input_order``, required then optional); an INT/FLOAT/STRING/BOOLEAN/COMBO input
  without ``forceInput`` is a widget. A seed (an input with ``control_after_generate``, or named
  ``seed``/``noise_seed``) is followed by its "control after generate" value, an ``image_upload``
  combo by its upload button's value: both exist only on the canvas and are skipped. A widget fed
  by a link keeps its place in the list, and the link wins. A missing value takes the input's
  default. ``widgets_values`` as a dict (newer frontends, some packs) is read by name;
- a muted node (mode 2) is left out, and so are the inputs it fed; a bypassed node (mode 4) is
  left out and each consumer gets the bypassed node's input of the consumer's type (the one at
  the same index first);
- Reroute nodes (and KJNodes' SetNode/GetNode pairs) are followed to the real source;
- a PrimitiveNode's value is put into the widget inputs it feeds;
- a node whose type ``/object_info`` lacks is an error naming it and its id when a node that
  runs needs its output; when nothing that runs uses it (a Note, a MarkdownNote, a pack's
  canvas-only helper such as rgthree's group bypasser) it is left out and listed in
  :attr:`Converted.ignored`;
- subgraphs and group nodes are refused: the frontend flattens them with code of its own, so the
  way out is its Workflow > Export (API).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from ...errors import ConfigError
from ...models import Record
from ...workflows.graph import BYPASSED, MUTED, SEED_NAMES, UI_ONLY_WIDGETS

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
NOTES = frozenset({"Note", "MarkdownNote"})
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
SET_NODE, GET_NODE = "SetNode", "GetNode"  # KJNodes' named links, resolved by its JavaScript
FRONTEND_ONLY = NOTES | {REROUTE, PRIMITIVE, SET_NODE, GET_NODE}
EXPORT_API = "in ComfyUI use Workflow > Export (API) and give that file instead"


# ---- reading a node definition (one entry of /object_info) -------------------------------------
def input_specs(definition: dict[str, Any]) -> list[tuple[str, list, bool]]:
    """``(name, spec, required)`` of every input, in the frontend's order."""
    inputs = definition.get("input") or {}
    order = definition.get("input_order") or {c: list(inputs.get(c) or {}) for c in ("required", "optional")}
    out = []
    for category in ("required", "optional"):
        specs = inputs.get(category) or {}
        for name in order.get(category) or []:
            if name in specs and isinstance(specs[name], (list, tuple)) and specs[name]:
                out.append((name, list(specs[name]), category == "required"))
    return out


def input_type(spec: list) -> str:
    return "COMBO" if isinstance(spec[0], list) else str(spec[0])


def input_options(spec: list) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec: list) -> list:
    return spec[0] if isinstance(spec[0], list) else list(input_options(spec).get("options") or [])


def is_widget(spec: list) -> bool:
    return input_type(spec) in WIDGET_TYPES and not input_options(spec).get("forceInput")


def ui_only_after(name: str, spec: list) -> list[str]:
    """The canvas-only values the frontend stores right after widget ``name``."""
    opts, kind = input_options(spec), input_type(spec)
    out = []
    if opts.get("control_after_generate") or (kind == "INT" and name in SEED_NAMES):
        out.append("control_after_generate")
    if opts.get("image_upload"):
        out.append("upload")
    return out


def widget_names(definition: dict[str, Any]) -> list[str]:
    """The names of a node's ``widgets_values``, in order, canvas-only values included."""
    names = []
    for name, spec, _required in input_specs(definition):
        if is_widget(spec):
            names += [name, *ui_only_after(name, spec)]
    return names


def _default(spec: list) -> tuple[bool, Any]:
    opts = input_options(spec)
    if "default" in opts:
        return True, opts["default"]
    options = combo_options(spec) if input_type(spec) == "COMBO" else []
    return (True, options[0]) if options else (False, None)


# ---- the canvas --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Link:
    origin: str
    origin_slot: int
    target: str
    target_slot: int


@dataclass
class Converted(Record):
    """The API form, and the nodes left out because nothing that runs needs them."""

    prompt: dict[str, Any]
    ignored: list[str] = field(default_factory=list)  # "node 7 (Label (rgthree))"


def is_canvas(data: Any) -> bool:
    """A workflow in the UI form (what the canvas saves) rather than the API form."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def _key(value: Any) -> str:
    return str(value)


class _Canvas:
    def __init__(self, ui: dict[str, Any]):
        self.nodes: dict[str, dict[str, Any]] = {}
        for node in ui.get("nodes") or []:
            if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
                raise ConfigError("the canvas workflow has a node without an id or a type")
            self.nodes[_key(node["id"])] = node
        self.links: dict[str, _Link] = {}
        for raw in ui.get("links") or []:
            link = _read_link(raw)
            if link is not None:
                self.links[link[0]] = link[1]
        self.setters: dict[Any, dict[str, Any]] = {}
        for node in self.nodes.values():
            if node["type"] == SET_NODE and _values(node):
                self.setters[_values(node)[0]] = node
        self._refuse_nested(ui)

    def _refuse_nested(self, ui: dict[str, Any]) -> None:
        definitions = ui.get("definitions") if isinstance(ui.get("definitions"), dict) else {}
        subgraphs = {_key(sg.get("id")) for sg in definitions.get("subgraphs") or [] if isinstance(sg, dict)}
        extra = ui.get("extra") if isinstance(ui.get("extra"), dict) else {}
        groups = set(extra.get("groupNodes") or {}) if isinstance(extra.get("groupNodes"), dict) else set()
        for nid, node in self.nodes.items():
            kind = node["type"]
            if kind in subgraphs:
                raise ConfigError(f"node {nid} is a subgraph, which only ComfyUI's frontend can unpack: {EXPORT_API}")
            for sep in (">", "/"):
                if kind.startswith("workflow" + sep) and kind[len("workflow") + 1:] in groups:
                    raise ConfigError(f"node {nid} ({kind}) is a group node, which only ComfyUI's frontend can "
                                      f"unpack: {EXPORT_API}")

    def input_link(self, node: dict[str, Any], index: Any) -> _Link | None:
        inputs = node.get("inputs") or []
        if not isinstance(index, int) or not 0 <= index < len(inputs) or not isinstance(inputs[index], dict):
            return None
        lid = inputs[index].get("link")
        return self.links.get(_key(lid)) if lid is not None else None

    def output_links(self, node: dict[str, Any]) -> Iterator[_Link]:
        for out in node.get("outputs") or []:
            for lid in (out.get("links") or []) if isinstance(out, dict) else []:
                if _key(lid) in self.links:
                    yield self.links[_key(lid)]


def _read_link(raw: Any) -> tuple[str, _Link] | None:
    try:
        if isinstance(raw, list) and len(raw) >= 5:
            lid, origin, origin_slot, target, target_slot = raw[:5]
        elif isinstance(raw, dict):
            lid, origin, origin_slot = raw["id"], raw["origin_id"], raw["origin_slot"]
            target, target_slot = raw["target_id"], raw["target_slot"]
        else:
            return None
        return _key(lid), _Link(_key(origin), int(origin_slot), _key(target), int(target_slot))
    except (KeyError, TypeError, ValueError):
        return None


def _values(node: dict[str, Any]) -> Any:
    values = node.get("widgets_values")
    return values if isinstance(values, (list, dict)) else []


def _mode(node: dict[str, Any]) -> int:
    mode = node.get("mode")
    return mode if isinstance(mode, int) else 0


def _label(nid: str, node: dict[str, Any]) -> str:
    title = node.get("title")
    return f"node {nid} ({node['type']}" + (f", titled {title!r})" if title and title != node["type"] else ")")


# ---- the conversion ----------------------------------------------------------------------------
class _Converter:
    def __init__(self, ui: dict[str, Any], object_info: dict[str, Any]):
        self.canvas = _Canvas(ui)
        self.defs = object_info
        self.pushed = self._primitive_values()

    def _primitive_values(self) -> dict[tuple[str, str], Any]:
        """(node id, input name) -> the value a PrimitiveNode puts there (through reroutes)."""
        pushed: dict[tuple[str, str], Any] = {}
        for node in self.canvas.nodes.values():
            values = _values(node)
            if node["type"] != PRIMITIVE or _mode(node) == MUTED or not isinstance(values, list) or not values:
                continue
            todo, seen = list(self.canvas.output_links(node)), set()
            while todo:
                link = todo.pop()
                target = self.canvas.nodes.get(link.target)
                if target is None or (link.target, link.target_slot) in seen:
                    continue
                seen.add((link.target, link.target_slot))
                if target["type"] == REROUTE:
                    todo += list(self.canvas.output_links(target))
                    continue
                inputs = target.get("inputs") or []
                if 0 <= link.target_slot < len(inputs) and isinstance(inputs[link.target_slot], dict):
                    entry = inputs[link.target_slot]
                    name = (entry.get("widget") or {}).get("name") if isinstance(entry.get("widget"), dict) else None
                    pushed[(link.target, str(name or entry.get("name")))] = values[0]
        return pushed

    def convert(self) -> Converted:
        prompt: dict[str, Any] = {}
        unknown: dict[str, dict[str, Any]] = {}
        for nid, node in self.canvas.nodes.items():
            kind = node["type"]
            if kind in FRONTEND_ONLY or _mode(node) in (MUTED, BYPASSED):
                continue
            definition = self.defs.get(kind)
            if not isinstance(definition, dict):
                unknown[nid] = node
                continue
            inputs = self._widgets(nid, node, definition)
            inputs.update(self._links(nid, node))
            title = node.get("title") or definition.get("display_name") or kind
            prompt[nid] = {"inputs": inputs, "class_type": kind, "_meta": {"title": str(title)}}
        for nid, node in prompt.items():  # inputs fed by a node that is not sent (muted) go too
            for name, value in list(node["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    if value[0] in unknown:
                        raise ConfigError(self._missing(value[0], unknown[value[0]],
                                                        f"node {nid} ({node['class_type']}).{name}"))
                    if value[0] not in prompt:
                        del node["inputs"][name]
        ignored = [_label(nid, node) for nid, node in unknown.items()]
        if not any((self.defs[n["class_type"]] or {}).get("output_node") for n in prompt.values()):
            why = f"; left out because the remote ComfyUI lacks them: {', '.join(ignored)}" if ignored else ""
            raise ConfigError("the workflow has no output node (SaveImage, PreviewImage, ...) that the remote "
                              f"ComfyUI can run{why}")
        return Converted(prompt, ignored)

    def _missing(self, nid: str, node: dict[str, Any], needed_by: str) -> str:
        return (f"{_label(nid, node)} is a node type the remote ComfyUI does not have, and {needed_by} needs "
                "its output: install its node pack there, or replace the node")

    def _widgets(self, nid: str, node: dict[str, Any], definition: dict[str, Any]) -> dict[str, Any]:
        specs = [(name, spec) for name, spec, _r in input_specs(definition) if is_widget(spec)]
        values = _values(node)
        out: dict[str, Any] = {}
        if isinstance(values, dict):
            for name, spec in specs:
                found, value = (True, values[name]) if name in values else _default(spec)
                if found:
                    out[name] = value
        else:
            pos = 0
            for i, (name, spec) in enumerate(specs):
                if pos < len(values):
                    out[name] = values[pos]
                    pos += 1
                else:
                    found, value = _default(spec)
                    if found:
                        out[name] = value
                for extra in ui_only_after(name, spec):
                    if pos >= len(values):
                        break
                    surplus = len(values) - pos > len(specs) - i - 1
                    if surplus or (extra == "control_after_generate" and values[pos] in CONTROL_VALUES):
                        pos += 1
        for name in list(out):
            if (nid, name) in self.pushed:
                out[name] = self.pushed[(nid, name)]
            if isinstance(out[name], list):  # the frontend wraps list values so they are not read as links
                out[name] = {"__value__": out[name]}
        return out

    def _links(self, nid: str, node: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, entry in enumerate(node.get("inputs") or []):
            if not isinstance(entry, dict) or entry.get("link") is None or not entry.get("name"):
                continue
            link = self.canvas.input_link(node, index)
            source = self._source(link, entry.get("type")) if link is not None else None
            if source is not None:
                out[str(entry["name"])] = [source[0], source[1]]
        return out

    def _source(self, link: _Link, want: Any) -> tuple[str, int] | None:
        """Where ``link`` really comes from: through reroutes, KJNodes' Set/Get pairs and
        bypassed nodes (None: nothing, e.g. a PrimitiveNode, whose value was pushed instead)."""
        seen: set[tuple[str, int]] = set()
        canvas = self.canvas
        while True:
            parent = canvas.nodes.get(link.origin)
            if parent is None or (link.origin, link.origin_slot) in seen:
                return None
            seen.add((link.origin, link.origin_slot))
            kind = parent["type"]
            if kind in (REROUTE, SET_NODE):
                nxt = canvas.input_link(parent, link.origin_slot if kind == REROUTE else 0)
            elif kind == GET_NODE:
                name = (_values(parent) or [None])[0] if isinstance(_values(parent), list) else None
                setter = canvas.setters.get(name)
                if setter is None:
                    raise ConfigError(f"GetNode {link.origin} reads {name!r}, but no SetNode sets it")
                nxt = canvas.input_link(setter, 0)
            elif kind in NOTES or kind == PRIMITIVE:
                return None
            elif _mode(parent) == BYPASSED:
                nxt = self._through_bypass(parent, link, want)
            else:
                return link.origin, link.origin_slot
            if nxt is None:
                return None
            link = nxt

    def _through_bypass(self, parent: dict[str, Any], link: _Link, want: Any) -> _Link | None:
        inputs = parent.get("inputs") or []
        for index in [link.origin_slot, *range(len(inputs))]:
            if 0 <= index < len(inputs) and isinstance(inputs[index], dict) and inputs[index].get("type") == want:
                return self.canvas.input_link(parent, index)
        return None


def to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> Converted:
    """``ui`` (the canvas form) as ComfyUI's API form, against ``object_info`` (``GET
    /object_info`` of the ComfyUI that will run it). :class:`ConfigError` says what cannot be
    converted and why."""
    if not is_canvas(ui):
        raise ConfigError("not a canvas workflow (it needs a nodes list and links)")
    if not isinstance(object_info, dict) or not object_info:
        raise ConfigError("the remote ComfyUI listed no node types (/object_info)")
    return _Converter(ui, object_info).convert()


__all__ = ["Converted", "UI_ONLY_WIDGETS", "combo_options", "input_options", "input_specs", "input_type",
           "is_canvas", "is_widget", "to_api", "ui_only_after", "widget_names"]
