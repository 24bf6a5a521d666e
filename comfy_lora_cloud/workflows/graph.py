"""A ComfyUI graph built in Python, written in both of ComfyUI's forms from one description.

* :meth:`Graph.ui` is the *UI form* (what the canvas saves, what the template browser opens):
  nodes with positions, widget values in the order the frontend creates the widgets, links as
  ``[id, from_node, from_slot, to_node, to_slot, type]``, notes and groups.
* :meth:`Graph.api` is the *API form* (what ``POST /prompt`` takes): ``{id: {class_type,
  inputs}}``, made the way the frontend's ``graphToPrompt`` makes it: notes are left out, a
  muted node (mode 2) is left out with the inputs it fed, and a bypassed node (mode 4) is left
  out with its consumers wired to its input of the same type.

Widget order is the frontend's: the node definition's inputs in order (required, then optional)
that are widgets, with a ``control_after_generate`` value right after a seed (an input with that
flag, or named ``seed``/``noise_seed``) and an ``upload`` value after LoadImage's image. The
builder does not know the definitions; ``tests/unit/test_templates.py`` checks every node of
every template against a recorded ``/object_info`` of ComfyUI with the packs installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

#: nodes the frontend draws but never sends to /prompt
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
#: widget values that exist only in the UI form (the seed's "control after generate", the upload button)
UI_ONLY_WIDGETS = frozenset({"control_after_generate", "upload"})
#: LiteGraph node modes
ALWAYS, MUTED, BYPASSED = 0, 2, 4
SEED_NAMES = ("seed", "noise_seed")


@dataclass(frozen=True)
class Port:
    """An output of a node: what an input links to."""

    node: int
    slot: int
    type: str


@dataclass
class Node:
    id: int
    type: str
    title: str
    pos: tuple[float, float]
    size: tuple[float, float]
    widgets: list[tuple[str, Any]]  # (name, value) in the frontend's widget order
    sockets: list[tuple[str, str, Port | None]]  # (name, type, link or None): every socket input, in order
    widget_links: dict[str, Port]  # widgets fed by a link (the widget keeps its value in the UI form)
    outputs: list[tuple[str, str]]  # (name, type)
    mode: int = ALWAYS
    color: str | None = None
    bgcolor: str | None = None

    def out(self, slot: int = 0) -> Port:
        return Port(self.id, slot, self.outputs[slot][1])

    def widget(self, name: str) -> Any:
        return dict(self.widgets)[name]


@dataclass
class Group:
    title: str
    bounding: tuple[float, float, float, float]
    color: str = "#3f789e"


@dataclass
class Graph:
    """Nodes, links, notes and groups of one workflow."""

    name: str
    description: str = ""
    nodes: dict[int, Node] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)

    def add(self, type: str, title: str, pos: tuple[float, float], *, widgets: Iterable[tuple[str, Any]] = (),
            sockets: Iterable[tuple[str, str, Port | None]] = (), links: dict[str, Port] | None = None,
            outputs: Iterable[tuple[str, str]] = (), size: tuple[float, float] | None = None,
            mode: int = ALWAYS) -> Node:
        """Add a node. ``widgets`` in the node's widget order (a seed's control value is added
        here); ``sockets`` every socket input, linked or not (``None``); ``links`` widgets fed
        by another node's output."""
        sockets, outputs = list(sockets), list(outputs)
        widget_list: list[tuple[str, Any]] = []
        for name, value in widgets:
            widget_list.append((name, value))
            if name in SEED_NAMES:
                widget_list.append(("control_after_generate", "fixed"))
        links = dict(links or {})
        unknown = set(links) - {n for n, _ in widget_list}
        if unknown:
            raise ValueError(f"{type}: linked widgets {sorted(unknown)} are not among its widgets")
        nid = len(self.nodes) + 1
        if size is None:
            size = (320.0, 46.0 + 24.0 * max(len(widget_list), 1) + 22.0 * max(len(sockets), len(outputs)))
        node = Node(nid, type, title, pos, size, widget_list, sockets, links, outputs, mode)
        self.nodes[nid] = node
        return node

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (420.0, 220.0),
             title: str = "Read me") -> Node:
        node = self.add("MarkdownNote", title, pos, widgets=[("text", text)], size=size)
        node.color, node.bgcolor = "#432", "#653"
        return node

    def group(self, title: str, nodes: Iterable[Node], color: str = "#3f789e", pad: float = 30.0) -> Group:
        """A titled box around ``nodes``."""
        nodes = list(nodes)
        x0 = min(n.pos[0] for n in nodes) - pad
        y0 = min(n.pos[1] for n in nodes) - pad - 40
        x1 = max(n.pos[0] + n.size[0] for n in nodes) + pad
        y1 = max(n.pos[1] + n.size[1] for n in nodes) + pad
        g = Group(title, (x0, y0, x1 - x0, y1 - y0), color)
        self.groups.append(g)
        return g

    # ---- the two forms ---------------------------------------------------------------------------
    def _links(self) -> list[tuple[int, Port, int, int, str]]:
        """(link id, from, to node, to slot, type) in node order, sockets before linked widgets."""
        out, lid = [], 0
        for node in self.nodes.values():
            slot = 0
            for _name, typ, port in node.sockets:
                if port is not None:
                    lid += 1
                    out.append((lid, port, node.id, slot, port.type))
                slot += 1
            for _name, port in node.widget_links.items():
                lid += 1
                out.append((lid, port, node.id, slot, port.type))
                slot += 1
        return out

    def ui(self) -> dict[str, Any]:
        links = self._links()
        by_target = {(to, slot): lid for lid, _p, to, slot, _t in links}
        by_source: dict[tuple[int, int], list[int]] = {}
        for lid, port, _to, _slot, _t in links:
            by_source.setdefault((port.node, port.slot), []).append(lid)
        nodes = []
        for order, node in enumerate(self.nodes.values()):
            inputs = [{"name": n, "type": t, "link": by_target.get((node.id, i))}
                      for i, (n, t, _p) in enumerate(node.sockets)]
            base = len(node.sockets)
            inputs += [{"name": n, "type": p.type, "widget": {"name": n}, "link": by_target[(node.id, base + i)]}
                       for i, (n, p) in enumerate(node.widget_links.items())]
            entry: dict[str, Any] = {
                "id": node.id, "type": node.type, "title": node.title, "pos": list(node.pos),
                "size": list(node.size), "flags": {}, "order": order, "mode": node.mode, "inputs": inputs,
                "outputs": [{"name": n, "type": t, "links": by_source.get((node.id, i), []), "slot_index": i}
                            for i, (n, t) in enumerate(node.outputs)],
                "properties": {"Node name for S&R": node.type},
                "widgets_values": [v for _n, v in node.widgets],
            }
            if node.color:
                entry["color"], entry["bgcolor"] = node.color, node.bgcolor
            nodes.append(entry)
        return {
            "last_node_id": max(self.nodes), "last_link_id": len(links), "nodes": nodes,
            "links": [[lid, p.node, p.slot, to, slot, typ] for lid, p, to, slot, typ in links],
            "groups": [{"title": g.title, "bounding": list(g.bounding), "color": g.color, "font_size": 24, "flags": {}}
                       for g in self.groups],
            "config": {}, "extra": {"info": f"comfy-lora-cloud template {self.name}: {self.description}"},
            "version": 0.4,
        }

    def _resolve(self, port: Port) -> Port | None:
        """Where a link really comes from once muted and bypassed nodes are gone (``None``: the
        input is dropped, as the frontend drops an input fed by a muted node)."""
        seen = set()
        while True:
            src = self.nodes[port.node]
            if src.mode == ALWAYS:
                return port
            if src.mode != BYPASSED or src.id in seen:
                return None
            seen.add(src.id)
            # the frontend passes a bypassed node's input of the output's type through (the one
            # at the same index first)
            candidates = [(i, p) for i, (_n, t, p) in enumerate(src.sockets) if t == port.type and p is not None]
            same = [p for i, p in candidates if i == port.slot]
            if not candidates:
                return None
            port = same[0] if same else candidates[0][1]

    def api(self) -> dict[str, Any]:
        prompt: dict[str, Any] = {}
        for node in self.nodes.values():
            if node.type in VIRTUAL_NODES or node.mode != ALWAYS:
                continue
            inputs: dict[str, Any] = {n: v for n, v in node.widgets if n not in UI_ONLY_WIDGETS}
            for name, _typ, port in node.sockets:
                src = self._resolve(port) if port is not None else None
                if src is not None:
                    inputs[name] = [str(src.node), src.slot]
            for name, port in node.widget_links.items():
                src = self._resolve(port)
                if src is None:
                    inputs.pop(name, None)
                else:
                    inputs[name] = [str(src.node), src.slot]
            prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title}}
        return prompt
