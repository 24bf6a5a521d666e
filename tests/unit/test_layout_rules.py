"""The house rules of design.md, checked on the source: imports point one way, only comfy/
imports ComfyUI, and requirements.txt (what ComfyUI-Manager installs) matches pyproject."""

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "comfy_lora_cloud"
COMFY_MODULES = {"comfy", "comfy_api", "comfy_execution", "server", "folder_paths", "nodes", "execution"}
LAYER = {  # layer -> layers it may import (design.md: edges -> service -> adapters -> base)
    "cli": {"service", "base"},
    "comfy": {"service", "base"},
    "service": {"storage", "providers", "remote", "dataset", "training", "workflows", "base"},
    "storage": {"base"}, "providers": {"base"}, "remote": {"base"}, "dataset": {"base", "storage"},
    "training": {"base", "storage", "dataset", "providers"},
    "worker": {"base", "storage", "dataset", "training"},  # what runs on the rented GPU
    "workflows": {"base"},  # ComfyUI graphs as data (the templates)
    "base": {"base"},
}
BASE_MODULES = {"models", "errors", "settings", "__init__"}  # what "base" may mean: nothing else
# the public face of each adapter package: another package imports these modules, never the rest
ADAPTER_PUBLIC = {
    "storage": {"storage", "storage.base", "storage.layout", "storage.sync", "storage.local", "storage.identity"},
    "providers": {"providers", "providers.base", "providers.pricing", "providers.vast", "providers.local"},
    "dataset": {"dataset", "dataset.bucket", "dataset.pipeline", "dataset.validate", "dataset.load",
                "dataset.caption"},
    "training": {"training", "training.estimate", "training.kohya_config", "training.launch", "training.presets",
                 "training.progress", "training.spec", "training.status", "training.weights",
                 "training.lora_meta", "training.inference"},
}


def _layer(rel_parts: tuple[str, ...]) -> str:
    return rel_parts[0] if len(rel_parts) > 1 and rel_parts[0] in LAYER else "base"


def _imports(path: Path, pkg_parts: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if pkg_parts is None:
        pkg_parts = path.relative_to(REPO).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ((node.module,) if node.module else ()))
                out.append((mod, node.level))
            else:
                out.append((node.module or "", 0))
    return out


def test_only_comfy_package_imports_comfyui():
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        if rel[0] == "comfy":
            continue
        for mod, level in _imports(path):
            if level == 0 and mod.split(".")[0] in COMFY_MODULES:
                offenders.append(f"{path.relative_to(REPO)} imports {mod}")
    assert offenders == []


def _edge_offenders(path: Path, edge: str, pkg_parts: tuple[str, ...] | None = None) -> list[str]:
    offenders = []
    for mod, _ in _imports(path, pkg_parts):
        parts = mod.split(".")
        if parts[0] != "comfy_lora_cloud" or len(parts) < 2 or parts[1] in (edge, "service"):
            continue
        if parts[1] not in BASE_MODULES:
            offenders.append(mod)
    return offenders


def test_edges_import_only_the_service_and_the_base():
    """cli/ and comfy/ reach everything through the service: a behaviour reached from a node, a
    route, the CLI and the background loop is the same code, wired once."""
    offenders = [f"{path.relative_to(REPO)} imports {mod}"
                 for edge in ("cli", "comfy") for path in (PKG / edge).rglob("*.py")
                 for mod in _edge_offenders(path, edge)]
    assert offenders == []


def test_the_edge_rule_catches_an_adapter_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..storage.gcs import GcsStorage\nfrom ..service.app import App\nfrom ..errors import ConfigError\n")
    assert _edge_offenders(bad, "cli", ("comfy_lora_cloud", "cli")) == ["comfy_lora_cloud.storage.gcs"]


def test_packages_use_only_each_others_public_modules():
    """An adapter imports another adapter's public modules, never its internals (a module that is
    not in ADAPTER_PUBLIC, or a private name)."""
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        here = rel[0] if len(rel) > 1 else "base"
        for mod, _ in _imports(path):
            parts = mod.split(".")
            if parts[0] != "comfy_lora_cloud" or len(parts) < 2 or parts[1] == here or parts[1] not in ADAPTER_PUBLIC:
                continue
            target = ".".join(parts[1:])
            if target not in ADAPTER_PUBLIC[parts[1]]:
                offenders.append(f"{path.relative_to(REPO)} imports {mod}")
    assert offenders == []


def test_imports_point_one_way():
    offenders = []
    for path in PKG.rglob("*.py"):
        here = _layer(path.relative_to(PKG).parts)
        for mod, _ in _imports(path):
            if not mod.startswith("comfy_lora_cloud."):
                continue
            target = _layer(tuple(mod.split(".")[1:]) + ("x",))
            if target != here and target not in LAYER[here]:
                offenders.append(f"{path.relative_to(REPO)} ({here}) imports {mod} ({target})")
    assert offenders == []


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).replace('"', "'").lower()


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()


def test_requirements_txt_matches_pyproject():
    """What ComfyUI-Manager installs = the package's dependencies + the dataset nodes' needs,
    with the same version ranges as pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {_name(d): d for d in project["dependencies"]}
    dataset = {_name(d): d for d in project["optional-dependencies"]["dataset"]}
    reqs = {
        _name(line): line
        for line in (l.split("#")[0].strip() for l in (REPO / "requirements.txt").read_text().splitlines())
        if line
    }
    assert set(deps) <= set(reqs), "requirements.txt lacks a dependency of pyproject.toml"
    assert set(reqs) - set(deps) <= set(dataset), "requirements.txt has a package no extra declares"
    for name, line in reqs.items():
        want = deps.get(name) or dataset[name]
        spec = lambda r: re.sub(r"\s+", "", r.split(";")[0]).replace('"', "'")
        assert spec(line) == spec(want), f"{name}: requirements.txt says {line!r}, pyproject {want!r}"


def test_no_pin_that_comfyui_pins_differently():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=!~;\[ ]", dep, 1)[0].lower()
        if name in {"aiohttp", "pydantic", "pydantic-settings", "pillow", "numpy", "safetensors", "torch", "yarl"}:
            assert "==" not in dep and "<=" not in dep, f"{dep}: ComfyUI pins this itself; use a range"


def test_pack_entry_point_imports_without_comfyui():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pack_under_test", REPO / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(mod.comfy_entrypoint) and mod.WEB_DIRECTORY == "./web"
    assert (REPO / "web").is_dir()
