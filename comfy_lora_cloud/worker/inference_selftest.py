"""The inference image's self-test: ``start.sh --self-test`` runs
``python -m comfy_lora_cloud.worker.inference_selftest``.

The one home of "does the inference image work". It starts the image's ComfyUI on CPU on a free
127.0.0.1 port (user, input, output and temp folders in a throwaway directory), waits for
``/object_info``, then checks, one line each; exit 0 only when all pass:

1. **packs**: ComfyUI's log has no ``IMPORT FAILED`` line for a custom node, and every folder of
   ``custom_nodes/`` is in its "Import times for custom nodes" table (a pack not even tried fails
   too). ComfyUI's own optional nodes that did not import (``comfy_extras``, e.g. the audio nodes
   without torchaudio) are named on the first line without failing it;
2. **our nodes**: every ``LoraCloud*`` node type the shipped templates use is in ``/object_info``,
   from this pack's module;
3. **templates**: ``/api/workflow_templates`` lists every template of ``example_workflows/``
   under this pack's folder name (what ComfyUI's template browser shows).

ComfyUI is started from ``LORA_CLOUD_COMFY_COMMAND`` (the image sets ``python /opt/ComfyUI/main.py``)
or ``--comfy-command``; its ``custom_nodes/`` is next to its ``main.py``. Standard library only:
it runs before anything else is known to work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

PACK_DIR = Path(__file__).resolve().parents[2]  # the pack's folder (custom_nodes/comfy_lora_cloud)
_IMPORT_LINE = re.compile(r"^\s*[\d.]+ seconds(?: \((IMPORT FAILED)\))?: (.+?)\s*$")


class CheckFailed(Exception):
    """One check failed; the message says what and why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def templates_of(pack_dir: Path) -> list[str]:
    return sorted(p.stem for p in (pack_dir / "example_workflows").glob("*.json"))


def our_node_types(pack_dir: Path) -> set[str]:
    """The ``LoraCloud*`` node types the shipped templates use (UI-format workflows: nodes[].type)."""
    types: set[str] = set()
    for path in (pack_dir / "example_workflows").glob("*.json"):
        data = json.loads(path.read_text("utf-8"))
        types |= {n.get("type", "") for n in data.get("nodes", []) if str(n.get("type", "")).startswith("LoraCloud")}
    return types


def pack_folder(custom_nodes: Path, pack_dir: Path) -> str:
    """This pack's folder name under ``custom_nodes/`` (a link in a dev checkout; ComfyUI names
    routes, web files and templates after it)."""
    if custom_nodes.is_dir():
        for entry in custom_nodes.iterdir():
            if entry.resolve() == pack_dir.resolve():
                return entry.name
    return "comfy_lora_cloud"


def check_packs(log_text: str, custom_nodes: Path) -> str:
    failed = [line.strip() for line in log_text.splitlines() if "IMPORT FAILED" in line and "custom_nodes" in line]
    imported = {}
    for line in log_text.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            imported[Path(m.group(2)).name] = m.group(1) is None
    packs = sorted(p.name for p in custom_nodes.iterdir()
                   if (p.is_dir() or p.suffix == ".py") and not p.name.startswith((".", "__")))
    missing = [p for p in packs if Path(p).stem not in imported and p not in imported]
    if failed or missing:
        raise CheckFailed("; ".join([*failed, *(f"{p}: not in ComfyUI's import table" for p in missing)]))
    return f"{len(packs)} packs imported: {', '.join(packs)}"


def check_nodes(object_info: dict, pack_dir: Path, folder: str) -> str:
    wanted = our_node_types(pack_dir)
    ours = {k for k, v in object_info.items() if str(v.get("python_module", "")).endswith(f"custom_nodes.{folder}")}
    missing = sorted(wanted - ours)
    if not wanted or missing:
        raise CheckFailed(f"not in /object_info: {missing or 'no LoraCloud node in the templates'}")
    return f"{len(ours)} LoRA Cloud nodes in /object_info, including the {len(wanted)} the templates use"


def check_templates(listing: dict, pack_dir: Path, folder: str) -> str:
    wanted = templates_of(pack_dir)
    listed = sorted(listing.get(folder) or [])
    if not wanted or sorted(set(wanted) - set(listed)):
        raise CheckFailed(f"/api/workflow_templates lists {listed} for {folder}, not {wanted}")
    return f"templates listed: {', '.join(wanted)}"


def run_self_test(command: Sequence[str], *, pack_dir: Path = PACK_DIR, ready_timeout: float = 600.0,
                  out: Callable[[str], None] = print) -> int:
    main_py = next((Path(c) for c in command if c.endswith("main.py")), None)
    if main_py is None or not main_py.is_file():
        out(f"self-test comfyui: FAILED: no ComfyUI main.py in {shlex.join(command)}")
        out("SELF-TEST FAILED")
        return 1
    custom_nodes = main_py.parent / "custom_nodes"
    folder = pack_folder(custom_nodes, pack_dir)
    tmp = Path(tempfile.mkdtemp(prefix="lora-cloud-selftest-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / "comfyui.log"
    dirs = {d: tmp / d for d in ("user", "input", "output", "temp")}
    for d in dirs.values():
        d.mkdir()
    cmd = [*command, "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--user-directory", str(dirs["user"]), "--input-directory", str(dirs["input"]),
           "--output-directory", str(dirs["output"]), "--temp-directory", str(dirs["temp"]),
           "--database-url", f"sqlite:///{dirs['user'] / 'comfyui.db'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("CONTAINER_ID", "CONTAINER_API_KEY", "HF_TOKEN")}
    results: list[bool] = []

    def line(name: str, check: Callable[[], str]) -> None:
        try:
            detail, ok = check(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except (OSError, ValueError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        results.append(ok)
        out(f"self-test {name}: {'ok' if ok else 'FAILED'}: {detail}")

    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=tmp, start_new_session=True)
    try:
        info = None
        while time.monotonic() - start < ready_timeout and proc.poll() is None:
            try:
                info = _get(f"{base}/object_info", timeout=30)
                break
            except (OSError, ValueError):
                time.sleep(1)
        text = log_path.read_text("utf-8", "replace")
        if not isinstance(info, dict):
            why = f"exited {proc.returncode}" if proc.poll() is not None else f"not ready in {ready_timeout:g} s"
            out(text[-4000:])
            line("comfyui", lambda: (_ for _ in ()).throw(CheckFailed(f"ComfyUI {why}: {shlex.join(cmd)}")))
        else:
            builtin = sorted(set(re.findall(r"IMPORT FAILED: (\S+\.py)", text)))
            line("comfyui", lambda: f"started on CPU in {time.monotonic() - start:.0f} s ({len(info)} node types)"
                 + (f"; ComfyUI's own optional nodes that did not import: {', '.join(builtin)}" if builtin else ""))
            line("packs", lambda: check_packs(text, custom_nodes))
            line("nodes", lambda: check_nodes(info, pack_dir, folder))
            line("templates", lambda: check_templates(_get(f"{base}/api/workflow_templates"), pack_dir, folder))
            if not all(results):
                out(text[-4000:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    ok = bool(results) and all(results)
    out("SELF-TEST PASSED" if ok else "SELF-TEST FAILED")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="start.sh --self-test", description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy-command", default=os.environ.get("LORA_CLOUD_COMFY_COMMAND", "python /opt/ComfyUI/main.py"),
                    help="how to start ComfyUI (without listen/port/folder flags)")
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    return run_self_test(shlex.split(args.comfy_command), ready_timeout=args.ready_timeout,
                         out=lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main())
