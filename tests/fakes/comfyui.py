"""A fake ComfyUI that speaks the API a client uses, for what
cannot run here (Flux on a GPU): the one stand-in for a ComfyUI, in-process or as a process.

- ``GET /object_info[/{class}]`` serves the node definitions recorded from a real ComfyUI 0.3.64
  with the packs (tests/data/object_info.json), with the file lists of model inputs filled from
  the folders this fake knows (``--extra-model-paths-config``, as ComfyUI reads it; ``--input-
  directory``);
- ``POST /prompt`` validates against those definitions as ComfyUI does (tests/fixtures/
  object_info.py:api_problems): an unknown node -> ``invalid_prompt``; no output node ->
  ``prompt_no_outputs``; a missing input, a bad link, a value the node does not take, a file its
  folder does not hold (a LoRA not there is refused) -> ``prompt_outputs_failed_validation`` with
  ``node_errors`` per node. A file input of a folder the fake does not know takes any file name;
- one worker runs prompts in order: ``execution_start``, ``executing`` per node, ``progress`` per
  KSampler step (``step_s`` each; ``FAKE_COMFY_STEP_SECONDS`` for the process), ``executed`` and
  ``execution_success`` to the prompt's ``client_id``; SaveImage writes real PNGs into the output
  folder with ComfyUI's names (``<prefix>_00001_.png``) and its ``prompt``/``workflow`` text
  chunks; PreviewImage into ``temp``. ``fail_with`` (``--fail-with``) makes every prompt fail
  at its first node with that message; :meth:`FakeComfyUI.hold` keeps prompts pending until
  :meth:`FakeComfyUI.release`;
- ``/history``, ``/history/{id}``, ``/queue`` (GET, POST delete), ``/interrupt`` (stops the running
  prompt at its next step: ``execution_interrupted``), ``/view``, ``/system_stats``, ``/ws``
  (``status`` first, then JSON events), ``/`` (a page), each also under ``/api``;
- with ``LORA_CLOUD_STORAGE`` in its environment (as on a session's instance) the process loads the
  pack's routes as ComfyUI would (``comfy/routes/``), so ``/lora_cloud/api/...`` works remotely.

In-process: ``fake = FakeComfyUI(tmp_path / "out"); server = await aiohttp_server(fake.app())``;
``fake.queued`` holds every accepted prompt, ``fake.files`` every saved output's bytes. As a
process (what the inference image's supervisor runs as its ComfyUI):
``python -m tests.fakes.comfyui --listen 127.0.0.1 --port P --output-directory D
--extra-model-paths-config models.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

MODEL_EXTS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Queued:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]

    @property
    def client_id(self) -> str | None:
        return self.extra.get("client_id")

    def row(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra, []]


class FakeComfyUI:
    def __init__(self, output_dir: Path | str | None = None, model_paths: dict[str, list[Path]] | None = None, *,
                 input_dir: Path | str | None = None, step_s: float = 0.0, fail_with: str | None = None):
        self.output_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
        self.model_paths = dict(model_paths or {})  # folder name -> dirs
        if input_dir:
            self.model_paths.setdefault("input", []).append(Path(input_dir))
        self.step_s = step_s
        self.fail_with = fail_with  # every prompt fails at its first node with this message
        self.queued: dict[str, Queued] = {}  # every prompt accepted, by id
        self.files: dict[tuple[str, str], bytes] = {}  # (subfolder, filename) -> what SaveImage wrote
        self.history: dict[str, dict[str, Any]] = {}
        self.queue: list[Queued] = []
        self.running: Queued | None = None
        self.sockets: dict[str, set[web.WebSocketResponse]] = {}
        self.counter: dict[str, int] = {}
        self.interrupt_flag = False
        self._held = False
        self._wake: asyncio.Event | None = None

    # ---- control from a test -------------------------------------------------------------------
    def hold(self) -> None:
        """Prompts stay pending (``queue_pending``) until :meth:`release`."""
        self._held = True

    def release(self) -> None:
        self._held = False
        if self._wake is not None:
            self._wake.set()

    # ---- node definitions ----------------------------------------------------------------------
    def _files(self, folder: str) -> list[str]:
        out: set[str] = set()
        exts = IMAGE_EXTS if folder == "input" else MODEL_EXTS
        for root in self.model_paths.get(folder, []):
            if root.is_dir():
                for p in root.rglob("*"):
                    if p.is_file() and p.suffix.lower() in exts:
                        out.add(p.relative_to(root).as_posix())
        return sorted(out)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """The recorded definitions, file lists filled from the folders this fake knows."""
        from tests.fixtures.object_info import FILE_INPUTS, load

        defs = load()
        for (node, name), folder in FILE_INPUTS.items():
            spec = (defs.get(node) or {}).get("input", {}).get("required", {}).get(name)
            if spec is not None and folder in self.model_paths:
                spec[0] = self._files(folder)
        return defs

    def _strict_files(self) -> frozenset[tuple[str, str]]:
        from tests.fixtures.object_info import FILE_INPUTS

        return frozenset(key for key, folder in FILE_INPUTS.items() if folder in self.model_paths)

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, prompt: Any) -> tuple[int, dict[str, Any]] | None:
        from tests.fixtures.object_info import api_problems

        def refused(kind: str, message: str, details: str = "", node_errors: dict | None = None):
            return 400, {"error": {"type": kind, "message": message, "details": details, "extra_info": {}},
                         "node_errors": node_errors or {}}

        if not isinstance(prompt, dict) or not prompt or not all(isinstance(n, dict) for n in prompt.values()):
            return refused("invalid_prompt", "Invalid prompt", "empty or not an object of nodes")
        nodes = self.nodes()
        for nid, node in prompt.items():
            if node.get("class_type") not in nodes:
                return refused("invalid_prompt", f"Cannot execute because node {node.get('class_type')} does not "
                                                 "exist.", f"Node ID '#{nid}'")
        outputs = [nid for nid, n in prompt.items() if nodes[n["class_type"]].get("output_node")]
        if not outputs:
            return refused("prompt_no_outputs", "Prompt has no outputs")
        errors: dict[str, Any] = {}
        for p in api_problems(prompt, nodes, strict_files=self._strict_files()):
            entry = errors.setdefault(p.node, {"errors": [], "dependent_outputs": outputs, "class_type": p.class_type})
            entry["errors"].append({"type": p.kind, "message": _MESSAGES.get(p.kind, p.kind),
                                    "details": f"{p.input}: {p.text}" if p.input else p.text,
                                    "extra_info": {"input_name": p.input}})
        if errors:
            return refused("prompt_outputs_failed_validation", "Prompt outputs failed validation", "", errors)
        return None

    # ---- events ---------------------------------------------------------------------------------
    async def send(self, client_id: str | None, event: str, data: dict[str, Any]) -> None:
        targets = self.sockets.get(client_id, set()) if client_id else {ws for s in self.sockets.values() for ws in s}
        for ws in list(targets):
            try:
                await ws.send_json({"type": event, "data": data})
            except (ConnectionError, RuntimeError):
                pass

    async def status(self) -> None:
        await self.send(None, "status", {"status": {"exec_info": {"queue_remaining": len(self.queue)
                                                                   + (1 if self.running else 0)}}})

    # ---- running --------------------------------------------------------------------------------
    async def worker(self) -> None:
        self._wake = asyncio.Event()
        while True:
            while not self.queue or self._held:
                self._wake.clear()
                await self._wake.wait()
            self.running = self.queue.pop(0)
            self.interrupt_flag = False
            try:
                await self.execute(self.running)
            finally:
                self.running = None
                await self.status()

    async def execute(self, q: Queued) -> None:
        cid, prompt_id, prompt = q.client_id, q.prompt_id, q.prompt
        started = int(time.time() * 1000)
        messages: list[list[Any]] = [["execution_start", {"prompt_id": prompt_id, "timestamp": started}]]
        await self.send(cid, "execution_start", {"prompt_id": prompt_id, "timestamp": started})
        outputs: dict[str, Any] = {}
        values: dict[str, Any] = {}
        nid, node = "", {"class_type": "?"}
        try:
            for nid in _topo(prompt):
                node = prompt[nid]
                await self.send(cid, "executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
                if self.fail_with:
                    raise RuntimeError(self.fail_with)
                values[nid] = await self.run_node(nid, node, values, q, outputs)
        except _Interrupted:
            messages.append(["execution_interrupted", {"prompt_id": prompt_id, "node_id": nid}])
            await self.send(cid, "execution_interrupted", {"prompt_id": prompt_id, "node_id": nid,
                                                          "node_type": node["class_type"], "executed": []})
            self._record(q, outputs, "error", False, messages)
            return
        except Exception as exc:  # noqa: BLE001 - a failing node, as ComfyUI reports it
            data = {"prompt_id": prompt_id, "node_id": nid, "node_type": node["class_type"], "executed": [],
                    "exception_message": str(exc), "exception_type": type(exc).__name__, "traceback": []}
            messages.append(["execution_error", data])
            await self.send(cid, "execution_error", data)
            self._record(q, outputs, "error", False, messages)
            return
        done = int(time.time() * 1000)
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": done}])
        self._record(q, outputs, "success", True, messages)
        await self.send(cid, "executing", {"node": None, "prompt_id": prompt_id})
        await self.send(cid, "execution_success", {"prompt_id": prompt_id, "timestamp": done})

    def _record(self, q: Queued, outputs: dict, status: str, completed: bool, messages: list) -> None:
        self.history[q.prompt_id] = {"prompt": [q.number, q.prompt_id, q.prompt, q.extra, list(outputs)],
                                     "outputs": outputs,
                                     "status": {"status_str": status, "completed": completed, "messages": messages},
                                     "meta": {k: {"node_id": k} for k in outputs}}

    async def run_node(self, nid: str, node: dict, values: dict, q: Queued, outputs: dict) -> Any:
        """What a node makes, in miniature: latents and images are ``{"w", "h", "n", "seed"}``."""
        ct, inputs = node["class_type"], node.get("inputs") or {}

        def arg(name: str) -> Any:
            v = inputs.get(name)
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                return values.get(v[0])
            return v

        if ct in ("EmptyLatentImage", "EmptySD3LatentImage"):
            return {"w": int(arg("width")), "h": int(arg("height")), "n": int(arg("batch_size")), "seed": 0}
        if ct == "EmptyImage":
            return {"w": int(arg("width")), "h": int(arg("height")), "n": int(arg("batch_size")),
                    "seed": int(arg("color"))}
        if ct == "KSampler":
            latent = dict(arg("latent_image") or {"w": 64, "h": 64, "n": 1})
            seed, steps = int(arg("seed")), int(arg("steps"))
            for i in range(steps):
                if self.interrupt_flag:
                    raise _Interrupted()
                await asyncio.sleep(self.step_s)
                await self.send(q.client_id, "progress", {"value": i + 1, "max": steps, "prompt_id": q.prompt_id,
                                                          "node": nid})
            latent["seed"] = seed
            return latent
        if ct in ("SaveImage", "PreviewImage"):
            image = arg("images")
            if not isinstance(image, dict) or "w" not in image:
                image = {"w": 64, "h": 64, "n": 1, "seed": 0}
            kind = "output" if ct == "SaveImage" else "temp"
            prefix = str(arg("filename_prefix") or "ComfyUI") if ct == "SaveImage" else "ComfyUI_temp"
            saved = [self.save_png(prefix, image, q, kind) for _ in range(image["n"])]
            outputs[nid] = {"images": saved}
            await self.send(q.client_id, "executed", {"node": nid, "display_node": nid, "output": outputs[nid],
                                                      "prompt_id": q.prompt_id})
            return None
        # anything else passes its first image or latent through (a decode, a label, a grid, a model)
        for name in inputs:
            value = arg(name)
            if isinstance(value, dict) and "w" in value:
                return value
        if ct == "LoadImage":
            return {"w": 512, "h": 512, "n": 1, "seed": 1}
        return {"class_type": ct}

    def save_png(self, prefix: str, image: dict, q: Queued, kind: str) -> dict[str, str]:
        from PIL import Image, PngImagePlugin

        sub, _, base = prefix.rpartition("/")
        folder = (self.output_dir if kind == "output" else self.output_dir.parent / "temp") / sub
        folder.mkdir(parents=True, exist_ok=True)
        n = self.counter.get(prefix, 0) + 1
        self.counter[prefix] = n
        name = f"{base}_{n:05}_.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(q.prompt))
        if isinstance(q.extra.get("extra_pnginfo"), dict) and "workflow" in q.extra["extra_pnginfo"]:
            info.add_text("workflow", json.dumps(q.extra["extra_pnginfo"]["workflow"]))
        seed = int(image.get("seed") or 0)
        color = ((seed * 47) % 256, (seed * 91 + n) % 256, (seed * 13) % 256)
        buf = io.BytesIO()
        Image.new("RGB", (max(8, image["w"] // 8), max(8, image["h"] // 8)), color).save(buf, "PNG", pnginfo=info)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, folder / name)
        if kind == "output":
            self.files[(sub, name)] = buf.getvalue()
        return {"filename": name, "subfolder": sub, "type": kind}

    # ---- HTTP -----------------------------------------------------------------------------------
    def app(self, pack_routes: bool = False) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = web.RouteTableDef()

        @r.get("/")
        async def index(request: web.Request) -> web.Response:
            return web.Response(text="<!doctype html><title>ComfyUI</title><h1>Fake ComfyUI</h1>",
                                content_type="text/html")

        @r.get("/system_stats")
        async def system_stats(request: web.Request) -> web.Response:
            return web.json_response({"system": {"os": "posix", "comfyui_version": "0.3.64-fake",
                                                 "argv": ["main.py"]}, "devices": []})

        @r.get("/object_info")
        async def object_info(request: web.Request) -> web.Response:
            return web.json_response(self.nodes())

        @r.get("/object_info/{node}")
        async def object_info_one(request: web.Request) -> web.Response:
            nodes = self.nodes()
            name = request.match_info["node"]
            return web.json_response({name: nodes[name]} if name in nodes else {})

        @r.post("/prompt")
        async def post_prompt(request: web.Request) -> web.Response:
            body = await request.json()
            prompt = body.get("prompt") if isinstance(body, dict) else None
            refused = self.validate(prompt)
            if refused is not None:
                return web.json_response(refused[1], status=refused[0])
            extra = dict(body.get("extra_data") or {})
            if body.get("client_id"):
                extra["client_id"] = body["client_id"]
            q = Queued(len(self.queued) + 1, str(body.get("prompt_id") or uuid.uuid4()), prompt, extra)
            self.queued[q.prompt_id] = q
            self.queue.append(q)
            if self._wake is not None:
                self._wake.set()
            await self.status()
            return web.json_response({"prompt_id": q.prompt_id, "number": q.number, "node_errors": {}})

        @r.get("/queue")
        async def get_queue(request: web.Request) -> web.Response:
            return web.json_response({"queue_running": [self.running.row()] if self.running else [],
                                      "queue_pending": [q.row() for q in self.queue]})

        @r.post("/queue")
        async def post_queue(request: web.Request) -> web.Response:
            body = await request.json()
            if body.get("clear"):
                self.queue.clear()
            drop = set(body.get("delete") or [])
            self.queue[:] = [q for q in self.queue if q.prompt_id not in drop]
            return web.Response(status=200)

        @r.post("/interrupt")
        async def interrupt(request: web.Request) -> web.Response:
            body = await request.json() if request.can_read_body else {}
            wanted = (body or {}).get("prompt_id")
            if self.running and (wanted is None or wanted == self.running.prompt_id):
                self.interrupt_flag = True
            return web.Response(status=200)

        @r.get("/history")
        async def history(request: web.Request) -> web.Response:
            items = list(self.history.items())
            if request.query.get("max_items"):
                items = items[-int(request.query["max_items"]):]
            return web.json_response(dict(items))

        @r.get("/history/{prompt_id}")
        async def history_one(request: web.Request) -> web.Response:
            pid = request.match_info["prompt_id"]
            return web.json_response({pid: self.history[pid]} if pid in self.history else {})

        @r.get("/view")
        async def view(request: web.Request) -> web.StreamResponse:
            name, sub = request.query.get("filename", ""), request.query.get("subfolder", "")
            kind = request.query.get("type", "output")
            base = self.output_dir if kind == "output" else self.output_dir.parent / "temp"
            path = (base / sub / name).resolve()
            if not name or base.resolve() not in path.parents or not path.is_file():
                return web.Response(status=404)
            return web.Response(body=path.read_bytes(), content_type="image/png")

        @r.get("/ws")
        async def ws_handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            cid = request.query.get("clientId") or uuid.uuid4().hex
            self.sockets.setdefault(cid, set()).add(ws)
            await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": len(self.queue)}},
                                                          "sid": cid}})
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.ERROR:
                        break
            finally:
                self.sockets.get(cid, set()).discard(ws)
            return ws

        routes = list(r)
        if pack_routes:
            routes += _pack_routes()
        for route in routes:
            if isinstance(route, web.RouteDef):
                app.router.add_route(route.method, route.path, route.handler)
                app.router.add_route(route.method, "/api" + route.path, route.handler)

        async def start_worker(app: web.Application):
            task = asyncio.create_task(self.worker())
            yield
            task.cancel()

        app.cleanup_ctx.append(start_worker)
        return app


_MESSAGES = {
    "required_input_missing": "Required input is missing",
    "bad_linked_input": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
    "return_type_mismatch": "Return type mismatch between linked nodes",
    "value_not_in_list": "Value not in list",
    "value_smaller_than_min": "Value smaller than min",
    "value_bigger_than_max": "Value bigger than max",
    "invalid_input_type": "Failed to convert an input value",
    "unknown_input": "Input not in the node's definition",
}


class _Interrupted(Exception):
    pass


def _pack_routes() -> list:
    """The pack's routes, as ComfyUI loads them on a session's instance."""
    from comfy_lora_cloud.comfy.routes import register_routes
    from comfy_lora_cloud.service.app import App

    holder: dict[str, App] = {}

    async def get_app() -> App:
        if "app" not in holder:
            holder["app"] = await asyncio.to_thread(App.open)
        return holder["app"]

    pack = web.RouteTableDef()
    register_routes(pack, get_app)
    return list(pack)


def _topo(prompt: dict[str, Any]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(nid: str) -> None:
        if nid in seen:
            return
        seen.add(nid)
        for v in (prompt[nid].get("inputs") or {}).values():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in prompt:
                visit(v[0])
        order.append(nid)

    for nid in prompt:
        visit(nid)
    return order


def read_model_paths(path: str | None) -> dict[str, list[Path]]:
    """The folders of an extra_model_paths.yaml as ComfyUI reads them (the simple form the
    supervisor writes: ``name:`` then ``    base_path: ...`` and ``    <folder>: <subdir>``)."""
    out: dict[str, list[Path]] = {}
    if not path:
        return out
    base = Path(".")
    entries: list[tuple[str, str]] = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith(" ") or ":" not in line:
            continue
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if value.startswith('"'):
            value = json.loads(value)
        if key == "base_path":
            base = Path(value)
        else:
            entries.append((key, value))
    for key, value in entries:
        out.setdefault(key, []).append(base / value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="fake ComfyUI for tests (takes ComfyUI's main.py flags)")
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8188)
    ap.add_argument("--output-directory", default=None)
    ap.add_argument("--extra-model-paths-config", default=None)
    ap.add_argument("--input-directory", default=None)
    ap.add_argument("--fail-with", default=None, help="every prompt fails at its first node with this message")
    ap.add_argument("--disable-auto-launch", action="store_true")
    ap.add_argument("--user-directory", default=None)
    ap.add_argument("--temp-directory", default=None)
    ap.add_argument("--database-url", default=None)  # the supervisor puts ComfyUI's database in its user folder
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args()
    fake = FakeComfyUI(args.output_directory, read_model_paths(args.extra_model_paths_config),
                       input_dir=args.input_directory, fail_with=args.fail_with,
                       step_s=float(os.environ.get("FAKE_COMFY_STEP_SECONDS", "0.05")))
    print(f"To see the GUI go to: http://{args.listen}:{args.port}", flush=True)
    web.run_app(fake.app(pack_routes=bool(os.environ.get("LORA_CLOUD_STORAGE"))), host=args.listen, port=args.port,
                print=None, handle_signals=True)


if __name__ == "__main__":
    main()
