"""The node modules import ComfyUI's ``comfy_api`` at the top, so CI cannot import them: a name
they reach through one of the pack's modules (``graph.load_images``, ``runs.step_progress``)
is checked here instead, by reading them, so a rename cannot leave a node calling what is gone."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

NODES = Path(__file__).resolve().parents[2] / "comfy_lora_cloud" / "comfy" / "nodes"
NODE_MODULES = sorted(NODES.glob("*.py"))


def pack_modules(tree: ast.Module, package: str) -> dict[str, str]:
    """Local name -> the pack module it stands for (``from . import runs``,
    ``from ..service import graph``)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            parent = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                name = f"{parent}.{alias.name}"
                try:
                    importlib.import_module(name)
                except ImportError:
                    continue  # a name, not a module: the import itself checks it
                out[alias.asname or alias.name] = name
    return out


def references(path: Path) -> list[tuple[int, str, str]]:
    tree = ast.parse(path.read_text())
    modules = pack_modules(tree, "comfy_lora_cloud.comfy.nodes")
    return [(n.lineno, modules[n.value.id], n.attr) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules]


@pytest.mark.parametrize("path", NODE_MODULES, ids=lambda p: p.name)
def test_every_pack_name_a_node_reaches_exists(path):
    missing = [f"{path.name}:{line}: {module}.{attr}" for line, module, attr in references(path)
               if not hasattr(importlib.import_module(module), attr)]
    assert missing == []


def test_the_check_sees_a_missing_name(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from . import runs\n\nruns.step_progress(None)\nruns.stepprogress_bar(None)\n")
    found = [(module, attr) for _, module, attr in references(planted)
             if not hasattr(importlib.import_module(module), attr)]
    assert found == [("comfy_lora_cloud.comfy.nodes.runs", "stepprogress_bar")]


def test_the_check_reads_every_node_module():
    """The glob follows the nodes where they live: an empty one would pass while checking nothing."""
    assert {"datasets.py", "training.py", "generate.py", "templates.py", "runs.py"} <= {p.name for p in NODE_MODULES}
