"""A fake ComfyUI that speaks the API a client uses (reference/comfyui-contract.md §2, §4): enough of
it that the pack's remote side is tested against the protocol, not against mocks of our own code.

- ``POST /prompt`` validates like ComfyUI (unknown node -> ``invalid_prompt``; a missing input, a
  link to a missing node, a combo value not in its list -> ``prompt_outputs_failed_validation``
  with ``node_errors``); combos of model files list what is on disk, found through
  ``--extra-model-paths-config`` as ComfyUI finds them, so a LoRA that is not there is refused;
- one worker runs prompts in order: ``execution_start``, ``executing`` per node, ``progress`` per
  KSampler step (``FAKE_COMFY_STEP_SECONDS`` each), ``executed`` and ``execution_success`` to the
  prompt's ``client_id``; SaveImage writes real PNGs into ``--output-directory`` with ComfyUI's
  names (``<prefix>_00001_.png``) and its ``prompt``/``workflow`` text chunks;
- ``/history``, ``/history/{id}``, ``/queue`` (GET, POST delete), ``/interrupt`` (stops the running
  prompt at its next step: ``execution_interrupted``), ``/view``, ``/object_info[/{class}]``,
  ``/system_stats``, ``/ws`` (``status`` first, then JSON events), ``/`` (a page), each also under
  ``/api``;
- with ``LORA_CLOUD_STORAGE`` in its environment (as on a session's instance) it loads the pack's
  routes as ComfyUI would (``comfy/routes.py``), so ``/lora_cloud/api/...`` works remotely.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

MODEL_EXTS = (".safetensors", ".sft", ".ckpt", ".pt", ".bin")


class FakeComfy:
    def __init__(self, output_dir: Path, model_paths: dict[str, list[Path]], *, step_s: float = 0.05):
        self.output_dir = output_dir
        self.model_paths = model_paths  # folder name -> dirs
        self.step_s = step_s
        self.history: dict[str, dict[str, Any]] = {}
        self.queue: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = []
        self.running: tuple[int, str, dict[str, Any], dict[str, Any]] | None = None
        self.sockets: dict[str, set[web.WebSocketResponse]] = {}
        self.number = 0
        self.counter: dict[str, int] = {}
        self.interrupt_flag = False
        self.wake = asyncio.Event()
        self.fail_seed = int(os.environ.get("FAKE_COMFY_FAIL_SEED", "-1"))

    # ---- node definitions ----------------------------------------------------------------------
    def files(self, folder: str) -> list[str]:
        out: set[str] = set()
        for root in self.model_paths.get(folder, []):
            if root.is_dir():
                for p in root.rglob("*"):
                    if p.is_file() and p.suffix in MODEL_EXTS:
                        out.add(p.relative_to(root).as_posix())
        return sorted(out)

    def nodes(self) -> dict[str, dict[str, Any]]:
        f = self.files
        samplers, schedulers = ["euler", "euler_ancestral", "dpmpp_2m"], ["simple", "normal", "karras", "beta"]
        defs = {
            "UNETLoader": ({"unet_name": [f("diffusion_models")], "weight_dtype": [["default", "fp8_e4m3fn"]]},
                           ["MODEL"], False),
            "DualCLIPLoader": ({"clip_name1": [f("text_encoders")], "clip_name2": [f("text_encoders")],
                                "type": [["flux", "sd3", "sdxl"]]}, ["CLIP"], False),
            "VAELoader": ({"vae_name": [f("vae")]}, ["VAE"], False),
            "LoraLoaderModelOnly": ({"model": ["MODEL"], "lora_name": [f("loras")],
                                     "strength_model": ["FLOAT", {"default": 1.0}]}, ["MODEL"], False),
            "LoraLoader": ({"model": ["MODEL"], "clip": ["CLIP"], "lora_name": [f("loras")],
                            "strength_model": ["FLOAT", {}], "strength_clip": ["FLOAT", {}]}, ["MODEL", "CLIP"], False),
            # the pack's own loader (installed in the image): a name, fetched from the bucket on demand
            "LoraCloudLoraLoader": ({"model": ["MODEL"], "lora_name": ["STRING", {}],
                                     "strength_model": ["FLOAT", {}], "strength_clip": ["FLOAT", {}]},
                                    ["MODEL", "CLIP"], False),
            "CLIPTextEncode": ({"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}, ["CONDITIONING"], False),
            "FluxGuidance": ({"conditioning": ["CONDITIONING"], "guidance": ["FLOAT", {"default": 3.5}]},
                             ["CONDITIONING"], False),
            "EmptyLatentImage": ({"width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}],
                                  "batch_size": ["INT", {"default": 1}]}, ["LATENT"], False),
            "EmptySD3LatentImage": ({"width": ["INT", {"default": 1024}], "height": ["INT", {"default": 1024}],
                                     "batch_size": ["INT", {"default": 1}]}, ["LATENT"], False),
            "KSampler": ({"model": ["MODEL"], "seed": ["INT", {}], "steps": ["INT", {"default": 20}],
                          "cfg": ["FLOAT", {}], "sampler_name": [samplers], "scheduler": [schedulers],
                          "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"],
                          "denoise": ["FLOAT", {"default": 1.0}]}, ["LATENT"], False),
            "VAEDecode": ({"samples": ["LATENT"], "vae": ["VAE"]}, ["IMAGE"], False),
            "EmptyImage": ({"width": ["INT", {}], "height": ["INT", {}], "batch_size": ["INT", {}],
                            "color": ["INT", {}]}, ["IMAGE"], False),
            "SaveImage": ({"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, [], True),
            "PreviewImage": ({"images": ["IMAGE"]}, [], True),
        }
        return {name: {"input": {"required": req}, "input_order": {"required": list(req)}, "output": out,
                       "output_is_list": [False] * len(out), "output_name": out, "name": name, "display_name": name,
                       "description": "", "python_module": "nodes", "category": "fake", "output_node": is_out}
                for name, (req, out, is_out) in defs.items()}

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, prompt: Any) -> tuple[int, dict[str, Any]] | None:
        if not isinstance(prompt, dict) or not prompt:
            return 400, {"error": {"type": "invalid_prompt", "message": "Invalid prompt", "details": "empty",
                                   "extra_info": {}}, "node_errors": {}}
        nodes = self.nodes()
        for nid, node in prompt.items():
            if not isinstance(node, dict) or node.get("class_type") not in nodes:
                ct = node.get("class_type") if isinstance(node, dict) else None
                return 400, {"error": {"type": "invalid_prompt", "message": "Cannot execute because node "
                                       f"{ct} does not exist.", "details": f"Node ID '#{nid}'", "extra_info": {}},
                             "node_errors": {}}
        outputs = [nid for nid, n in prompt.items() if nodes[n["class_type"]]["output_node"]]
        if not outputs:
            return 400, {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                                   "extra_info": {}}, "node_errors": {}}
        errors: dict[str, Any] = {}
        for nid, node in prompt.items():
            spec = nodes[node["class_type"]]["input"]["required"]
            inputs = node.get("inputs") or {}
            problems = []
            for name, rule in spec.items():
                if name not in inputs:
                    problems.append({"type": "required_input_missing", "message": "Required input is missing",
                                     "details": name, "extra_info": {"input_name": name}})
                    continue
                value = inputs[name]
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    if value[0] not in prompt:
                        problems.append({"type": "bad_linked_input", "message": "Bad linked input",
                                         "details": f"{name}: node {value[0]} missing", "extra_info": {}})
                    continue
                if isinstance(rule[0], list) and value not in rule[0]:
                    problems.append({"type": "value_not_in_list", "message": "Value not in list",
                                     "details": f"{name}: '{value}' not in {rule[0][:20]}",
                                     "extra_info": {"input_name": name}})
            if problems:
                errors[nid] = {"errors": problems, "dependent_outputs": outputs, "class_type": node["class_type"]}
        if errors:
            return 400, {"error": {"type": "prompt_outputs_failed_validation",
                                   "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
                         "node_errors": errors}
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
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            self.running = self.queue.pop(0)
            self.interrupt_flag = False
            try:
                await self.execute(*self.running)
            finally:
                self.running = None
                await self.status()

    async def execute(self, number: int, prompt_id: str, prompt: dict[str, Any], extra: dict[str, Any]) -> None:
        cid = extra.get("client_id")
        started = int(time.time() * 1000)
        messages: list[list[Any]] = [["execution_start", {"prompt_id": prompt_id, "timestamp": started}]]
        await self.send(cid, "execution_start", {"prompt_id": prompt_id, "timestamp": started})
        outputs: dict[str, Any] = {}
        values: dict[str, Any] = {}
        order = _topo(prompt)
        try:
            for nid in order:
                node = prompt[nid]
                await self.send(cid, "executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
                values[nid] = await self.run_node(nid, node, prompt, values, cid, prompt_id, extra, outputs)
        except _Interrupted:
            messages.append(["execution_interrupted", {"prompt_id": prompt_id, "node_id": nid}])
            await self.send(cid, "execution_interrupted", {"prompt_id": prompt_id, "node_id": nid,
                                                          "node_type": node["class_type"], "executed": []})
            self._record(prompt_id, number, prompt, extra, outputs, "error", False, messages)
            return
        except Exception as exc:  # noqa: BLE001 - a failing node, as ComfyUI reports it
            data = {"prompt_id": prompt_id, "node_id": nid, "node_type": node["class_type"], "executed": [],
                    "exception_message": str(exc), "exception_type": type(exc).__name__, "traceback": []}
            messages.append(["execution_error", data])
            await self.send(cid, "execution_error", data)
            self._record(prompt_id, number, prompt, extra, outputs, "error", False, messages)
            return
        done = int(time.time() * 1000)
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": done}])
        self._record(prompt_id, number, prompt, extra, outputs, "success", True, messages)
        await self.send(cid, "executing", {"node": None, "prompt_id": prompt_id})
        await self.send(cid, "execution_success", {"prompt_id": prompt_id, "timestamp": done})

    def _record(self, prompt_id: str, number: int, prompt: dict, extra: dict, outputs: dict, status: str,
                completed: bool, messages: list) -> None:
        self.history[prompt_id] = {"prompt": [number, prompt_id, prompt, extra, list(outputs)], "outputs": outputs,
                                   "status": {"status_str": status, "completed": completed, "messages": messages},
                                   "meta": {k: {"node_id": k} for k in outputs}}

    async def run_node(self, nid: str, node: dict, prompt: dict, values: dict, cid: str | None, prompt_id: str,
                       extra: dict, outputs: dict) -> Any:
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
            if seed == self.fail_seed:
                raise RuntimeError(f"fake sampler failure for seed {seed}")
            for i in range(steps):
                if self.interrupt_flag:
                    raise _Interrupted()
                await asyncio.sleep(self.step_s)
                await self.send(cid, "progress", {"value": i + 1, "max": steps, "prompt_id": prompt_id, "node": nid})
            latent["seed"] = seed
            return latent
        if ct == "VAEDecode":
            return arg("samples")
        if ct in ("SaveImage", "PreviewImage"):
            image = arg("images") or {"w": 64, "h": 64, "n": 1, "seed": 0}
            kind = "output" if ct == "SaveImage" else "temp"
            prefix = str(arg("filename_prefix") or "ComfyUI") if ct == "SaveImage" else "ComfyUI_temp"
            saved = [self.save_png(prefix, image, prompt, extra, kind) for _ in range(image["n"])]
            outputs[nid] = {"images": saved}
            await self.send(cid, "executed", {"node": nid, "display_node": nid, "output": outputs[nid],
                                              "prompt_id": prompt_id})
            return None
        return {"class_type": ct}

    def save_png(self, prefix: str, image: dict, prompt: dict, extra: dict, kind: str) -> dict[str, str]:
        from PIL import Image, PngImagePlugin

        sub, _, base = prefix.rpartition("/")
        folder = (self.output_dir if kind == "output" else self.output_dir.parent / "temp") / sub
        folder.mkdir(parents=True, exist_ok=True)
        n = self.counter.get(prefix, 0) + 1
        self.counter[prefix] = n
        name = f"{base}_{n:05}_.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(prompt))
        if isinstance(extra.get("extra_pnginfo"), dict) and "workflow" in extra["extra_pnginfo"]:
            info.add_text("workflow", json.dumps(extra["extra_pnginfo"]["workflow"]))
        seed = int(image.get("seed") or 0)
        color = ((seed * 47) % 256, (seed * 91 + n) % 256, (seed * 13) % 256)
        buf = io.BytesIO()
        Image.new("RGB", (max(8, image["w"] // 8), max(8, image["h"] // 8)), color).save(buf, "PNG", pnginfo=info)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, folder / name)
        return {"filename": name, "subfolder": sub, "type": kind}

    # ---- HTTP -----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = web.RouteTableDef()

        @r.get("/")
        async def index(request: web.Request) -> web.Response:
            return web.Response(text="<!doctype html><title>ComfyUI</title><h1>Fake remote ComfyUI</h1>",
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
            prompt = body.get("prompt")
            refused = self.validate(prompt)
            if refused is not None:
                return web.json_response(refused[1], status=refused[0])
            prompt_id = str(body.get("prompt_id") or uuid.uuid4())
            extra = dict(body.get("extra_data") or {})
            if body.get("client_id"):
                extra["client_id"] = body["client_id"]
            self.number += 1
            self.queue.append((self.number, prompt_id, prompt, extra))
            self.wake.set()
            await self.status()
            return web.json_response({"prompt_id": prompt_id, "number": self.number, "node_errors": {}})

        @r.get("/queue")
        async def get_queue(request: web.Request) -> web.Response:
            def row(item):
                return [item[0], item[1], item[2], item[3], []]
            return web.json_response({"queue_running": [row(self.running)] if self.running else [],
                                      "queue_pending": [row(q) for q in self.queue]})

        @r.post("/queue")
        async def post_queue(request: web.Request) -> web.Response:
            body = await request.json()
            if body.get("clear"):
                self.queue.clear()
            drop = set(body.get("delete") or [])
            self.queue[:] = [q for q in self.queue if q[1] not in drop]
            return web.Response(status=200)

        @r.post("/interrupt")
        async def interrupt(request: web.Request) -> web.Response:
            body = await request.json() if request.can_read_body else {}
            wanted = (body or {}).get("prompt_id")
            if self.running and (wanted is None or wanted == self.running[1]):
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
        if os.environ.get("LORA_CLOUD_STORAGE"):  # the pack, loaded as ComfyUI loads it on the instance
            from comfy_lora_cloud.comfy.routes import register_routes
            from comfy_lora_cloud.service.app import App

            holder: dict[str, App] = {}

            async def get_app() -> App:
                if "app" not in holder:
                    holder["app"] = await asyncio.to_thread(App.open)
                return holder["app"]

            pack = web.RouteTableDef()
            register_routes(pack, get_app)
            routes += list(pack)
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


class _Interrupted(Exception):
    pass


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
    ap = argparse.ArgumentParser(description="fake ComfyUI for tests")
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8188)
    ap.add_argument("--output-directory", default="output")
    ap.add_argument("--extra-model-paths-config", default=None)
    ap.add_argument("--disable-auto-launch", action="store_true")
    ap.add_argument("--user-directory", default=None)
    ap.add_argument("--input-directory", default=None)
    ap.add_argument("--temp-directory", default=None)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args()
    fake = FakeComfy(Path(args.output_directory), read_model_paths(args.extra_model_paths_config),
                     step_s=float(os.environ.get("FAKE_COMFY_STEP_SECONDS", "0.05")))
    print(f"To see the GUI go to: http://{args.listen}:{args.port}", flush=True)
    web.run_app(fake.app(), host=args.listen, port=args.port, print=None, handle_signals=True)


if __name__ == "__main__":
    main()
