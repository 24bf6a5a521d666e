"""The docs cite only what is in the repository: every relative link in the README and docs/
resolves, every repository path they quote in backticks exists (a ``file::test`` names a real
test), and docs/troubleshooting.md has a section for every error kind the CLI can print."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from comfy_lora_cloud import errors

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = {p.name for p in REPO.iterdir()} - {".work", ".venv", ".git", ".pytest_cache"}  # what a clone has
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")


def _links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(doc.read_text("utf-8")) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def _cited_paths(doc: Path) -> list[str]:
    """Backticked tokens that name something in this repository: a path whose first part is a
    top-level entry (``docs/x.md``, ``tests/a.py::test_b``, ``comfy_lora_cloud/data/...``)."""
    out = []
    for token in CODE.findall(doc.read_text("utf-8")):
        token = token.rstrip(".,;:)")
        if "/" not in token or any(c in token for c in "<>{}$~") or "://" in token:
            continue
        if token.split("/", 1)[0] in TOP:
            out.append(token)
    return out


def test_the_docs_that_the_issue_asks_for_exist():
    for name in ("setup.md", "training-guide.md", "troubleshooting.md", "testing.md", "credentials.md"):
        assert (REPO / "docs" / name).is_file(), name
        assert f"docs/{name}" in (REPO / "README.md").read_text("utf-8"), f"the README does not point to {name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve(doc):
    missing = [t for t in _links(doc) if not (doc.parent / t.split("#")[0]).exists()]
    assert missing == [], f"{doc.name} links to what is not in the repository"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_paths_exist(doc):
    missing = []
    for token in _cited_paths(doc):
        path, _, test = token.partition("::")
        found = list(REPO.glob(path)) if "*" in path else [REPO / path] if (REPO / path).exists() else []
        if not found:
            missing.append(token)
        elif test and f"def {test.split('[')[0]}(" not in found[0].read_text("utf-8"):
            missing.append(token)
    assert missing == [], f"{doc.name} cites what is not in the repository"


def test_the_checker_sees_the_citations():
    """The two rules above would pass on a README that cites nothing: make sure they look."""
    cited = _cited_paths(REPO / "README.md")
    assert "example_workflows/dataset_to_lora.json" in cited and ".ci/run" in cited
    assert "docs/setup.md" in _links(REPO / "README.md")


def test_troubleshooting_covers_every_error_kind():
    text = (REPO / "docs" / "troubleshooting.md").read_text("utf-8")
    kinds = [name for name, cls in inspect.getmembers(errors, inspect.isclass)
             if issubclass(cls, errors.LoraCloudError)]
    assert len(kinds) >= 19
    missing = [k for k in kinds + ["UsageError"] if not re.search(rf"^## {k}\b", text, re.M)]
    assert missing == []
    for name in kinds:  # and each section states the kind's exit code
        code = getattr(errors, name).exit_code
        section = re.search(rf"^## {name}\b(.*?)(?=^## |\Z)", text, re.M | re.S).group(0)
        assert f"exit {code}" in section.splitlines()[0], name
