"""Hostile bucket content, as a rented host holding the bucket key could write it.

Objects are written straight into the LocalStorage folder (a GCS bucket accepts any object name,
so the storage layer's own key checks must not be what saves us), and the builders make image
"bombs" from headers alone: the pixel limit must refuse them before anything is decoded.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

from PIL import Image

# Script that would phone home if it ever ran in ComfyUI's origin: the browser test serves
# /pwned-beacon and asserts that nothing ever called it.
BEACON_JS = "fetch('/pwned-beacon?'+document.domain);window.__pwned=1;try{opener.__pwned=1}catch(e){}"
HTML_SAMPLE = f"<!doctype html><html><body><h1>pwned</h1><script>{BEACON_JS}</script></body></html>"
SVG_SAMPLE = ('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" '
              f'onload="{BEACON_JS}"><script>{BEACON_JS}</script><rect width="64" height="64"/></svg>')


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, in a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
            + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG with its SOF0 header patched to claim ``width`` x ``height``."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def put(root: Path, key: str, data: bytes | str) -> None:
    """Write an object the way a hostile host would: any name, any bytes."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


# name -> status.json body; each must end up in the runs listing's problems, never fail it
BAD_STATUSES: dict[str, str | bytes] = {
    "r-list": "[]",
    "r-state": json.dumps({"run_id": "r-state", "state": "pwned"}),
    "r-step": json.dumps({"run_id": "r-step", "state": "training", "step": "abc"}),
    "r-future": json.dumps({"run_id": "r-future", "state": "training", "updated_at": 1e30}),
    "r-nan": '{"run_id": "r-nan", "state": "training", "loss": NaN}',
    "r-deep": deep_json(100_000),
    "r-notjson": "{not json",
    "r-binary": b"\xff\xfe\x00\x01binary",
    "r-other": json.dumps({"run_id": "run-1", "state": "done"}),
    "r-huge": json.dumps({"run_id": "r-huge", "state": "training", "message": "x" * 300_000}),
    "r-message": json.dumps({"run_id": "r-message", "state": "failed", "error": {"html": "<b>"}}),
}
BAD_RUN_PREFIXES = ["bad run!", "..", "caf\u200be", "<script>"]  # a zero-width space: café itself is a name

# dataset name -> manifest body; the dataset is still listed, the manifest reported
BAD_MANIFESTS: dict[str, str] = {
    "ds-list": "[]",
    "ds-settings": json.dumps({"settings": "x"}),
    "ds-trigger": json.dumps({"trigger": {"a": 1}}),
    "ds-notjson": "{",
    "ds-deep": deep_json(100_000),
    "ds-type": json.dumps({"lora_type": "<img src=x onerror=alert(1)>"}),
    "ds-multiline": json.dumps({"trigger": "sks\n<script>"}),
}
BAD_DATASET_NAMES = ["caf\u200be", "bad name!", "<img src=x onerror=alert(1)>", " lead"]

BIG_INT = "9" * 401  # no float holds it: float() of it raises OverflowError

# run id -> spec.json body (a rented host can write it); GET /runs/{id}/config answers 422, never 500
BAD_SPECS: dict[str, str] = {
    "spec-deep": deep_json(50_000),
    "spec-deep-object": '{"overrides": ' + deep_json(50_000) + "}",
    "spec-bigint": '{"lora_type": "character", "vram_gb": ' + BIG_INT + "}",
    "spec-bigint-override": '{"lora_type": "character", "overrides": {"network_dim": ' + BIG_INT + "}}",
    "spec-inf": '{"lora_type": "character", "vram_gb": 1e999}',
    "spec-nan": '{"lora_type": "character", "vram_gb": NaN}',
    "spec-list": "[]",
    "spec-notjson": "{torn",
}
# run id -> spec.json that parses but holds odd values: a 200 (naming the problem where there is one)
ODD_SPECS: dict[str, str] = {
    "spec-huge-float": '{"lora_type": "character", "vram_gb": 1e308}',
    "spec-types": json.dumps({"lora_type": ["x"], "vram_gb": "24", "overrides": {"network_dim": "x"}}),
}

SAMPLE_FILES: dict[str, bytes] = {
    "x.html": HTML_SAMPLE.encode(),
    "x.svg": SVG_SAMPLE.encode(),
    "evil.png": HTML_SAMPLE.encode(),  # an image name, HTML inside
    "evil.svg.png": SVG_SAMPLE.encode(),
    "x.xhtml": HTML_SAMPLE.encode(),
    "x.js": BEACON_JS.encode(),
    "x.xml": SVG_SAMPLE.encode(),
}


def write_hostile_specs(root: Path) -> None:
    """A run prefix for each spec.json above (runs the listings then show, by their spec)."""
    for name, body in {**BAD_SPECS, **ODD_SPECS}.items():
        put(root, f"runs/{name}/spec.json", body)


def write_hostile_bucket(root: Path, run_id: str = "run-1", dataset: str = "cats") -> None:
    """Everything above, beside the seeded good data."""
    for name, body in BAD_STATUSES.items():
        put(root, f"runs/{name}/status.json", body)
    for prefix in BAD_RUN_PREFIXES:
        if prefix != "..":
            put(root, f"runs/{prefix}/status.json", json.dumps({"run_id": prefix, "state": "training"}))
    for name, body in BAD_MANIFESTS.items():
        put(root, f"datasets/{name}/001.png", png_claiming(8, 8))
        put(root, f"datasets/{name}/dataset.json", body)
    for name in BAD_DATASET_NAMES:
        put(root, f"datasets/{name}/001.png", png_claiming(8, 8))
    for name, body in SAMPLE_FILES.items():
        put(root, f"runs/{run_id}/samples/{name}", body)
    put(root, f"runs/{run_id}/samples/nested/deeper.png", png_claiming(8, 8))
    events = [json.dumps({"t": 1, "kind": "state", "state": "training"}), "[]", '"just a string"',
              json.dumps({"kind": 5}), deep_json(50_000), "NaN", "{torn"]
    put(root, f"runs/{run_id}/events.jsonl", "\n".join(events) + "\n")
    # images: bombs by header, and HTML named like an image
    put(root, f"datasets/{dataset}/bomb20k.png", png_claiming(20_000, 20_000))
    put(root, f"datasets/{dataset}/bomb12k.png", png_claiming(12_000, 12_000))
    put(root, f"datasets/{dataset}/bomb.jpg", jpeg_claiming(60_000, 60_000))
    put(root, f"datasets/{dataset}/bomb.gif", gif_claiming(65_535, 65_535))
    put(root, f"datasets/{dataset}/page.png", HTML_SAMPLE.encode())
    put(root, f"datasets/{dataset}/page.txt", "x" * (200 * 1024))  # a caption too big to read
    # LoRAs: names no route can use, a sidecar that is not an object, a hostile header
    put(root, "loras/<script>.safetensors", b"\x00" * 16)
    put(root, "loras/bad name!.safetensors", b"\x00" * 16)
    put(root, "loras/side-list.safetensors", b"\x00" * 16)
    put(root, "loras/side-list.json", "[]")
    deep = deep_json(100_000).encode()
    put(root, "loras/deep-header.safetensors", struct.pack("<Q", len(deep)) + deep)
    put(root, "loras/huge-header.safetensors", struct.pack("<Q", 2**63) + b"{}")
