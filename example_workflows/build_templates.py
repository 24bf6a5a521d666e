"""Writes the six workflow templates (comfy_lora_cloud/workflows/templates.py) as files:

    example_workflows/<name>.json       the UI form: ComfyUI's template browser lists these
                                        (under comfy_lora_cloud); drag one onto the canvas
    example_workflows/api/<name>.json   the API form, for POST /prompt (not listed by the browser)

    python example_workflows/build_templates.py

tests/unit/test_templates.py fails when a file differs from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from comfy_lora_cloud.workflows import TEMPLATES  # noqa: E402

API_DIR = HERE / "api"


def dump(data: dict) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def files() -> dict[Path, str]:
    """Every file this builder writes, with its text."""
    out = {}
    for name, template in TEMPLATES.items():
        graph = template.graph()
        out[HERE / f"{name}.json"] = dump(graph.ui())
        out[API_DIR / f"{name}.json"] = dump(graph.api())
    return out


if __name__ == "__main__":
    API_DIR.mkdir(exist_ok=True)
    for path, text in files().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
