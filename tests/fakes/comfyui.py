"""A stand-in for a ComfyUI's queue API, for what cannot run here (Flux on a GPU).

It answers the routes the pack uses as ComfyUI 0.3.64 does (reference/comfyui-contract.md §4):
``POST /prompt`` validates the prompt against the recorded node definitions
(tests/data/object_info.json, the same checks as tests/unit/test_templates.py) and answers
``{"prompt_id", "number", "node_errors"}`` or ComfyUI's 400 shape; ``GET /queue`` and
``GET /history/{id}`` move a prompt from pending to running to done, one step per poll (or when
the test says); a finished prompt has one PNG per SaveImage node, named as SaveImage names them,
served by ``GET /view``. Every route also answers under ``/api``.

    fake = FakeComfyUI(); server = await aiohttp_server(fake.app())

or as a process: ``python -m tests.fakes.comfyui --port P``.
"""

from __future__ import annotations

import argparse
import io
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Queued:
    prompt_id: str
    number: int
    prompt: dict[str, Any]
    client_id: str | None
    state: str = "pending"  # pending -> running -> done | failed
    polls: int = 0
    images: list[dict[str, str]] = field(default_factory=list)


def render_png(text: str, width: int = 96, height: int = 64) -> bytes:
    """A small PNG standing in for a render (its colour depends on the text)."""
    from PIL import Image, ImageDraw

    h = abs(hash(text))
    img = Image.new("RGB", (width, height), (h % 200 + 30, (h >> 8) % 200 + 30, (h >> 16) % 200 + 30))
    ImageDraw.Draw(img).text((4, 4), text[:16], fill=(255, 255, 255))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


class FakeComfyUI:
    def __init__(self, *, polls_to_finish: int = 1, fail_with: str | None = None, validate: bool = True):
        self.polls_to_finish = polls_to_finish  # /history polls while running before the prompt is done
        self.fail_with = fail_with  # an exception message: every prompt fails while executing
        self.validate = validate
        self.queued: dict[str, Queued] = {}
        self.files: dict[tuple[str, str], bytes] = {}  # (subfolder, filename) -> PNG

    # ---- behaviour ---------------------------------------------------------------------------------
    def _advance(self, q: Queued) -> None:
        if q.state == "pending":
            q.state = "running"
        elif q.state == "running":
            q.polls += 1
            if q.polls >= self.polls_to_finish:
                self.finish(q.prompt_id)

    def finish(self, prompt_id: str) -> None:
        q = self.queued[prompt_id]
        if self.fail_with:
            q.state = "failed"
            return
        for nid, node in q.prompt.items():
            if node.get("class_type") != "SaveImage":
                continue
            prefix = str(node["inputs"].get("filename_prefix", "ComfyUI"))
            subfolder, _, stem = prefix.rpartition("/")
            name = f"{stem}_{len(self.files) + 1:05d}_.png"
            self.files[(subfolder, name)] = render_png(prefix)
            q.images.append({"filename": name, "subfolder": subfolder, "type": "output", "node": nid})
        q.state = "done"

    def _history_entry(self, q: Queued) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for img in q.images:
            outputs.setdefault(img["node"], {"images": []})["images"].append(
                {"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]})
        if q.state == "failed":
            status = {"status_str": "error", "completed": False, "messages": [
                ["execution_start", {"prompt_id": q.prompt_id}],
                ["execution_error", {"prompt_id": q.prompt_id, "node_type": "UNETLoader",
                                     "exception_message": self.fail_with, "exception_type": "RuntimeError"}]]}
        else:
            status = {"status_str": "success", "completed": True, "messages": []}
        return {"prompt": [q.number, q.prompt_id, q.prompt, {}, list(outputs)], "outputs": outputs, "status": status,
                "meta": {}}

    # ---- routes ------------------------------------------------------------------------------------
    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body.get("prompt")
        if not isinstance(prompt, dict):
            return web.json_response({"error": {"type": "invalid_prompt", "message": "Invalid prompt", "details": "",
                                                "extra_info": {}}, "node_errors": {}}, status=400)
        if self.validate:
            from tests.fixtures.object_info import check_api, load

            problems = check_api(prompt, load())
            if problems:
                return web.json_response({
                    "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                              "details": "", "extra_info": {}},
                    "node_errors": {str(i): {"errors": [{"type": "invalid_input", "message": p, "details": ""}],
                                             "dependent_outputs": [], "class_type": "?"}
                                    for i, p in enumerate(problems)}}, status=400)
        pid = body.get("prompt_id") or str(uuid.uuid4())
        q = Queued(pid, len(self.queued), prompt, body.get("client_id"))
        self.queued[pid] = q
        return web.json_response({"prompt_id": pid, "number": q.number, "node_errors": {}})

    async def get_queue(self, request: web.Request) -> web.Response:
        def row(q: Queued) -> list:
            return [q.number, q.prompt_id, q.prompt, {"client_id": q.client_id}, []]

        return web.json_response({"queue_running": [row(q) for q in self.queued.values() if q.state == "running"],
                                  "queue_pending": [row(q) for q in self.queued.values() if q.state == "pending"]})

    async def get_history(self, request: web.Request) -> web.Response:
        q = self.queued.get(request.match_info["prompt_id"])
        if q is None:
            return web.json_response({})
        if q.state in ("pending", "running"):
            self._advance(q)
        if q.state in ("pending", "running"):
            return web.json_response({})
        return web.json_response({q.prompt_id: self._history_entry(q)})

    async def view(self, request: web.Request) -> web.Response:
        key = (request.query.get("subfolder", ""), request.query.get("filename", ""))
        if request.query.get("type", "output") != "output" or key not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[key], content_type="image/png")

    def app(self) -> web.Application:
        app = web.Application()
        for base in ("", "/api"):
            app.router.add_post(base + "/prompt", self.post_prompt)
            app.router.add_get(base + "/queue", self.get_queue)
            app.router.add_get(base + "/history/{prompt_id}", self.get_history)
            app.router.add_get(base + "/view", self.view)
        return app


def main() -> None:
    ap = argparse.ArgumentParser(description="a stand-in ComfyUI queue")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fail-with", default=None)
    args = ap.parse_args()
    fake = FakeComfyUI(fail_with=args.fail_with)
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
