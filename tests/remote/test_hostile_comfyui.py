"""A hostile remote ComfyUI: a real aiohttp server on 127.0.0.1 that answers what no ComfyUI
sends. The machine is someone else's, so every answer is untrusted input: a huge body is read no
further than its kind allows (the controller's peak memory stays flat), every malformed answer is
our :class:`ComfyUIError` naming what was wrong (never a raw exception or an endless wait), and
an image the Remote Generate node decodes is a PNG, JPEG or WebP of sane size, judged before any
pixel is decoded."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import WSMsgType, web
from PIL import Image

from comfy_lora_cloud.errors import ComfyUIError, WorkflowRejected
from comfy_lora_cloud.remote import comfyui
from comfy_lora_cloud.remote.comfyui import ComfyClient
from comfy_lora_cloud.service.sessions import decode_output_image, decode_output_images, save_output

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
PROMPT = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
IMAGE = {"filename": "out_00001_.png", "subfolder": "", "type": "output"}
DONE = {"outputs": {"9": {"images": [IMAGE]}}, "status": {"status_str": "success", "completed": True,
                                                            "messages": [["execution_start", {}]]}}


def png(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 1 if mode == "1" else (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


# ---- the server -----------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer(body: Any = None, *, raw: bytes | str | None = None, content_type: str = "application/json",
           status: int = 200) -> Handler:
    """A handler that always gives this answer: ``body`` as JSON, or ``raw`` bytes as they are."""
    async def handler(request: web.Request) -> web.StreamResponse:
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
            return web.Response(body=data, status=status, headers={"Content-Type": content_type})
        return web.json_response(body, status=status)
    return handler


def ws_sending(*frames: str | bytes) -> Handler:
    """``/ws`` that greets as ComfyUI does, then sends ``frames`` and stays open."""
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}})
        for frame in frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
        return ws
    return handler


def endless(content_type: str, total: int, head: bytes, filler: bytes, sent: dict[str, int], name: str, *,
            declared: bool = False) -> Handler:
    """``total`` bytes made as they are sent (the server holds one chunk, never the answer); with
    no Content-Length unless ``declared``: the client cannot judge it from a header and must count
    as it reads."""
    chunk = filler * (MiB // len(filler))

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        if declared:
            resp.content_length = total
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent[name] = 0
        try:
            await resp.write(head)
            sent[name] = len(head)
            while sent[name] < total:
                piece = chunk[:total - sent[name]]
                await resp.write(piece)
                sent[name] += len(piece)
        except ConnectionError:  # the client stopped reading and closed: what it should do
            return resp
        await resp.write_eof()
        return resp
    return handler


def hostile_comfyui(**overrides: Handler) -> web.Application:
    """A ComfyUI that answers well everywhere except at the routes in ``overrides`` (keys are
    the route paths with ``/`` and ``{}`` spelled as in :data:`ROUTES`)."""
    routes: dict[str, tuple[str, str, Handler]] = {
        "system_stats": ("GET", "/system_stats", answer({"system": {"comfyui_version": "0.3.64"}})),
        "object_info": ("GET", "/object_info", answer(
            {"KSampler": {"input": {"required": {"seed": ["INT", {"max": 18446744073709551615}]}},
                          "input_order": {"required": ["seed"]}}})),
        "prompt": ("POST", "/prompt", answer({"prompt_id": "p1", "number": 1, "node_errors": {}})),
        "history": ("GET", "/history/{pid}", answer({"p1": DONE})),
        "view": ("GET", "/view", answer(raw=png(), content_type="image/png")),
        "queue": ("GET", "/queue", answer({"queue_running": [], "queue_pending": []})),
        "queue_post": ("POST", "/queue", answer(raw=b"", content_type="application/octet-stream")),
        "interrupt": ("POST", "/interrupt", answer(raw=b"", content_type="application/octet-stream")),
        "ws": ("GET", "/ws", ws_sending()),
        "token": ("GET", "/lora_cloud/api/token", answer({"token": "t0k", "header": "X-LoRA-Cloud-Token"})),
        "download": ("POST", "/lora_cloud/api/loras/{name}/download", answer({"name": "x", "state": "done"})),
    }
    unknown = set(overrides) - set(routes)
    assert not unknown, unknown
    app = web.Application()
    for key, (method, path, handler) in routes.items():
        app.router.add_route(method, path, overrides.get(key, handler))
    return app


# ---- the calls a controller makes -------------------------------------------------------------
async def run(client: ComfyClient) -> Any:
    return await client.run(PROMPT, progress=lambda value, top, node: None, poll_s=0.05)


CALLS: dict[str, Callable[[ComfyClient], Awaitable[Any]]] = {
    "run": run,
    "status": lambda client: client.status("p1"),
    "object_info": lambda client: client.object_info(),
    "ping": lambda client: client.ping(),
    "fetch_lora": lambda client: client.fetch_lora("x"),
}
NOT_YET = answer({})  # /history while the prompt runs: the websocket is listened to

# (name, the call, the hostile answers, a fragment the error must have)
MALFORMED: list[tuple[str, str, dict[str, Handler], str]] = [
    ("prompt: an HTML page", "run", {"prompt": answer(raw="<html>oops</html>", content_type="text/html")},
     "/prompt: text/html, not JSON"),
    ("prompt: the id is a list", "run", {"prompt": answer({"prompt_id": ["p1"]})}, "/prompt: no prompt id"),
    ("prompt: no id", "run", {"prompt": answer({"number": 1})}, "/prompt: no prompt id"),
    ("prompt: JSON cut off", "run", {"prompt": answer(raw='{"prompt_id": "p')}, "/prompt: not usable JSON"),
    ("prompt: not UTF-8", "run", {"prompt": answer(raw=b'{"prompt_id": "\xff\xfe"}')}, "not UTF-8"),
    ("prompt: a refusal with node errors of the wrong types", "run",
     {"prompt": answer({"error": {"message": "x" * 10_000}, "node_errors": {"1": {"errors": 5}, "2": [1]}},
                       status=400)}, "refused the workflow: xxx"),
    ("history: a list", "run", {"history": answer([1, 2])}, "/history/p1: not a JSON object"),
    ("history: the entry is text", "run", {"history": answer({"p1": "done"})}, "entry is not a JSON object"),
    ("history: outputs is a list", "run", {"history": answer({"p1": {**DONE, "outputs": []}})},
     "'status' and 'outputs' must be JSON objects"),
    ("history: images is a number", "run", {"history": answer({"p1": {**DONE, "outputs": {"9": {"images": 5}}}})},
     "not an object with a list of images"),
    ("history: messages not pairs", "run",
     {"history": answer({"p1": {**DONE, "status": {"status_str": "error", "messages": [["x"], 7]}}})},
     "'status.messages' must be a list"),
    ("history: a file name with ..", "run",
     {"history": answer({"p1": {**DONE, "outputs": {"9": {"images": [{**IMAGE, "filename": "../../.bashrc"}]}}}})},
     "not a plain file name"),
    ("history: a file name that is a number", "run",
     {"history": answer({"p1": {**DONE, "outputs": {"9": {"images": [{**IMAGE, "filename": 5}]}}}})},
     "no file name"),
    ("history: an unknown image type", "run",
     {"history": answer({"p1": {**DONE, "outputs": {"9": {"images": [{**IMAGE, "type": "../etc"}]}}}})},
     "is not one of output, temp, input"),
    ("history: nested 100 000 deep", "run", {"history": answer(raw="[" * 100_000 + "]" * 100_000)},
     "nested deeper than"),
    ("history: a 401-digit number", "run", {"history": answer(raw='{"p1": ' + "9" * 401 + "}")},
     "an integer of 401 digits"),
    ("history: NaN", "run", {"history": answer(raw='{"p1": NaN}')}, "NaN is not JSON"),
    ("history: JSON labelled as HTML", "run",
     {"history": answer(raw=json.dumps({"p1": DONE}), content_type="text/html")}, "text/html, not JSON"),
    ("history: too many images", "run",
     {"history": answer({"p1": {**DONE, "outputs": {"9": {"images": [IMAGE] * 300}}}})},
     "300 images, more than"),
    ("view: an HTML page", "run", {"view": answer(raw="<html>login</html>", content_type="text/html")},
     "text/html, not an image file"),
    ("view: JSON", "run", {"view": answer({"error": "x"})}, "application/json, not an image file"),
    ("view: empty", "run", {"view": answer(raw=b"", content_type="image/png")}, "an empty file"),
    ("view: over its limit by Content-Length", "run",
     {"view": endless("image/png", comfyui.MAX_VIEW_BYTES + 1, b"", b"\0", {}, "view", declared=True)},
     "more than the 64 MiB"),
    ("ws: a message that is not JSON", "run", {"history": NOT_YET, "ws": ws_sending("hello")},
     "/ws: a message that is not usable JSON"),
    ("ws: a JSON list", "run", {"history": NOT_YET, "ws": ws_sending("[1, 2]")}, "not a JSON object"),
    ("ws: progress as text", "run",
     {"history": NOT_YET, "ws": ws_sending(json.dumps({"type": "progress", "data": {
         "prompt_id": "p1", "value": "abc", "max": [4], "node": "8"}}))}, "a progress event without"),
    ("ws: a message over 4 MiB", "run", {"history": NOT_YET, "ws": ws_sending("x" * (5 * MiB))},
     "/ws: a message over 4 MiB"),
    ("queue: running is a number", "status", {"history": NOT_YET, "queue": answer({"queue_running": 5})},
     "/queue: 'queue_running' and 'queue_pending' must be lists"),
    ("object_info: a list", "object_info", {"object_info": answer([])}, "/object_info: not a JSON object"),
    ("object_info: a definition of the wrong shape", "object_info",
     {"object_info": answer({"KSampler": {"input": [], "input_order": 3}})}, "the definition of 'KSampler'"),
    ("system_stats: a list", "ping", {"system_stats": answer(["ok"])}, "/system_stats: not a JSON object"),
    ("token: the token is a number", "fetch_lora", {"token": answer({"token": 5})}, "no token and header name"),
    ("token: a header name with a newline", "fetch_lora", {"token": answer({"token": "t", "header": "X-A\r\nB: c"})},
     "no token and header name"),
]


@pytest.mark.parametrize("call,overrides,expected", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_every_malformed_answer_is_our_error(aiohttp_server, call, overrides, expected):
    server = await aiohttp_server(hostile_comfyui(**overrides), host="127.0.0.1")
    async with ComfyClient(str(server.make_url("")), give_up_s=5) as client:  # a session's client
        with pytest.raises(ComfyUIError) as caught:
            await asyncio.wait_for(CALLS[call](client), 60)  # a safety net: none of these may wait forever
    # a refusal at /prompt is the one answer that is ComfyUI's verdict, not a malformed one
    assert isinstance(caught.value, WorkflowRejected) == ("refused the workflow" in expected)
    assert expected in caught.value.message, caught.value.message
    assert caught.value.message.startswith("the remote ComfyUI")
    assert len(caught.value.message) < 2000  # megabytes from the remote never become the message


def test_there_are_at_least_15_kinds_of_malformed_answer():
    assert len(MALFORMED) >= 15


async def test_well_formed_answers_still_work(aiohttp_server):
    """The same server without overrides: the checks refuse nothing ComfyUI really sends (a
    20-digit seed limit in /object_info included)."""
    server = await aiohttp_server(hostile_comfyui(), host="127.0.0.1")
    async with ComfyClient(str(server.make_url(""))) as client:
        result = await run(client)
        assert [(i.filename, i.data) for i in result.images] == [("out_00001_.png", png())]
        assert (await client.object_info())["KSampler"]["input_order"] == {"required": ["seed"]}
        assert (await client.status("p1")).state == "done"
        assert (await client.fetch_lora("x"))["state"] == "done"


# ---- huge answers: the controller's memory ------------------------------------------------------
CHILD = r"""
import asyncio, json, sys
from comfy_lora_cloud.errors import ComfyUIError
from comfy_lora_cloud.remote.comfyui import ComfyClient

def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

async def main(url):
    out = {}
    async with ComfyClient(url) as client:
        await client.ping()  # everything imported and warmed: the baseline is the controller at rest
        out["baseline_kb"] = peak_kb()
        # the smaller first: a peak is only ever raised, so each reading is the peak up to then
        for name, call in (("history", lambda: client.status("huge")),
                           ("view", lambda: client.run({"1": {"class_type": "SaveImage", "inputs": {}}}))):
            try:
                await call()
                out[name] = "accepted"
            except ComfyUIError as exc:
                out[name] = exc.message
            out[name + "_peak_kb"] = peak_kb()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc/self/status")
async def test_huge_answers_leave_the_controllers_memory_flat(aiohttp_server):
    """A 400 MB /view and a 300 MB /history (no Content-Length: counted as read) raise the peak
    memory of the process that asks by less than 100 MB: each is refused at its limit."""
    sent: dict[str, int] = {}
    view = endless("image/png", 400 * 10**6, b"\x89PNG\r\n\x1a\n", b"\0", sent, "view")
    history = endless("application/json", 300 * 10**6, b'{"huge": {"outputs": {"9": {"images": [',
                      b'{"filename": "a.png", "subfolder": "", "type": "output"}, ', sent, "history")
    done = answer({"p1": DONE})

    async def history_of(request: web.Request) -> web.StreamResponse:
        return await (history if request.match_info["pid"] == "huge" else done)(request)

    server = await aiohttp_server(hostile_comfyui(view=view, history=history_of), host="127.0.0.1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(server.make_url("")), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    out = json.loads(stdout)
    assert "/view (out_00001_.png): over 64 MiB" in out["view"]
    assert "/history/huge: over 8 MiB" in out["history"]
    for name in ("view", "history"):
        grew_mb = (out[name + "_peak_kb"] - out["baseline_kb"]) / 1024
        assert grew_mb < 100, f"the {name} answer raised the peak memory by {grew_mb:.0f} MB"
    assert sent["view"] < 200 * 10**6 and sent["history"] < 200 * 10**6  # the client stopped reading early


# ---- images the Remote Generate node decodes ---------------------------------------------------
def test_an_eps_is_refused_without_running_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    ran: list[Any] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    eps = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(eps, "EPS")
    with pytest.raises(ComfyUIError) as caught:
        decode_output_image(eps.getvalue(), "out_00001_.png")
    assert "only PNG, JPEG and WebP" in caught.value.message and "out_00001_.png: not an image" in caught.value.message
    assert ran == []  # Pillow never tried the EPS plugin (which would hand the file to Ghostscript)


def test_a_144_megapixel_image_is_refused_from_its_header():
    bomb = png((12_000, 12_000), mode="1")  # one colour: a few KB on the wire
    assert len(bomb) < 1 * MiB
    with pytest.raises(ComfyUIError) as caught:
        decode_output_image(bomb, "big.png")
    assert "12000x12000 is 144 megapixels, over the 36 MP limit" in caught.value.message


def test_a_batch_of_big_one_colour_images_is_refused_before_any_is_decoded(monkeypatch):
    from comfy_lora_cloud.service.sessions import images as sessions

    decoded: list[str] = []
    monkeypatch.setattr(sessions, "decode_output_image", lambda data, name: decoded.append(name))
    big = png((5_500, 5_500), mode="1")  # 30 MP each, under the limit of one image
    with pytest.raises(ComfyUIError) as caught:
        decode_output_images([(f"big_{i}.png", big) for i in range(3)])
    assert "3 images of 91 megapixels together, more than the 72" in caught.value.message
    assert decoded == []
    assert decode_output_images([("a.png", big), ("b.png", big)]) == [None, None] and decoded == ["a.png", "b.png"]


def test_png_jpeg_and_webp_decode_to_rgb():
    from comfy_lora_cloud.dataset.load import DECODABLE_FORMATS
    from comfy_lora_cloud.service.sessions import OUTPUT_IMAGE_FORMATS

    assert OUTPUT_IMAGE_FORMATS <= DECODABLE_FORMATS  # a narrowing of the loader's allowlist, not a second one
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = io.BytesIO()
        Image.new("RGBA" if fmt != "JPEG" else "RGB", (24, 16), (10, 200, 30)).save(data, fmt)
        image = decode_output_image(data.getvalue(), f"a.{fmt.lower()}")
        assert image.mode == "RGB" and image.size == (24, 16)
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    with pytest.raises(ComfyUIError):  # a format Pillow reads safely, but not one ComfyUI outputs
        decode_output_image(gif.getvalue(), "a.gif")


# ---- output files --------------------------------------------------------------------------------
def test_outputs_with_one_name_are_all_kept(tmp_path):
    first = save_output(tmp_path, "img_00001_.png", b"one")
    second = save_output(tmp_path, "img_00001_.png", b"two")
    third = save_output(tmp_path, "img_00001_.png", b"three")
    assert [p.name for p in (first, second, third)] == ["img_00001_.png", "img_00001_-2.png", "img_00001_-3.png"]
    assert [p.read_bytes() for p in (first, second, third)] == [b"one", b"two", b"three"]
    hidden = save_output(tmp_path, ".bashrc", b"x")  # never a hidden file, always inside the folder
    assert hidden.parent == tmp_path and hidden.name == "bashrc"
