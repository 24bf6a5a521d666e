"""The sidebar's modules (web/): one per section and one per store, no markup from strings, no side
effects at import.

ComfyUI imports every .js file under web/ as a top-level module, so only the entry module may
register anything; and bucket text must only ever become text
nodes, so no module may parse markup from a string.
"""

from __future__ import annotations

import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"
ENTRY = "lora_cloud.js"
SECTIONS = ("instances", "datasets", "training", "loras", "generate")
MARKUP_SINKS = re.compile(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|createContextualFragment"
                          r"|DOMParser|\beval\(|new Function\(")


def test_one_module_per_section_and_the_shared_ones():
    files = {p.name for p in WEB.glob("*.js")}
    assert {ENTRY, "api.js", "events.js", "stores.js", "patch.js", "state.js", "ui.js"} <= files
    for section in SECTIONS:
        assert f"{section}.js" in files
        text = (WEB / f"{section}.js").read_text()
        assert re.search(rf"export const {section}Section = \{{ id: \"{section}\"", text), section
    entry = (WEB / ENTRY).read_text()
    for section in SECTIONS:
        assert f'from "./{section}.js"' in entry


def test_no_module_parses_markup_from_strings():
    for path in WEB.rglob("*.js"):
        text = path.read_text()
        assert not MARKUP_SINKS.search(text), f"{path.name} builds markup from a string"


def test_only_the_entry_module_registers_anything():
    for path in WEB.rglob("*.js"):
        if path.name == ENTRY:
            continue
        text = path.read_text()
        assert "registerExtension(" not in text and "registerSidebarTab(" not in text, path.name


def test_event_names_are_the_servers_and_spelled_in_one_module():
    """web/events.js holds the names of the live events, the same set as service/events.py; no
    other module spells one (a renamed event would otherwise go silent in a section)."""
    from comfy_lora_cloud.service import events

    server = {value for name, value in vars(events).items() if name.endswith("_EVENT")}
    web = dict(re.findall(r'^\s+(\w+): "(lora_cloud\.\w+)"', (WEB / "events.js").read_text(), re.M))
    assert set(web.values()) == server
    assert len(web) == len(server)
    for path in WEB.rglob("*.js"):
        if path.name == "events.js":
            continue
        spelled = set(re.findall(r"lora_cloud\.[a-z_]+", path.read_text())) & server
        assert not spelled, f"{path.name} spells {spelled}: take the name from events.js"


def test_urls_are_built_in_the_api_module_only():
    """Every request goes through api.js: no other module names the pack's route prefix."""
    for path in WEB.rglob("*.js"):
        if path.name == "api.js":
            continue
        assert "/lora_cloud/api" not in path.read_text(), path.name


def test_one_stylesheet_and_no_module_injects_styles():
    """The styles are the pack's one stylesheet, linked once; no module writes a <style>."""
    assert (WEB / "lora_cloud.css").is_file()
    for path in WEB.rglob("*.js"):
        text = path.read_text()
        assert 'createElement("style")' not in text and 'h("style"' not in text, path.name
    assert "lora_cloud.css" in (WEB / ENTRY).read_text()
