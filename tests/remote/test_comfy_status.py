"""``ComfyClient.status`` reads a prompt's history, then the queue. A prompt that finishes
between the two reads is in neither; it must come out done, not "lost" (a flaky sidebar test
showed "test lost" for a render that had finished)."""

from __future__ import annotations

from aiohttp import web

from comfy_lora_cloud.remote.comfyui import ComfyClient

DONE = {"outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
        "status": {"status_str": "success", "completed": True, "messages": []}}


def finishing_between_reads() -> web.Application:
    """The first history read finds nothing and the queue is already empty: the prompt ended."""
    reads = {"history": 0}

    async def history(request: web.Request) -> web.Response:
        reads["history"] += 1
        return web.json_response({} if reads["history"] == 1 else {"p1": DONE})

    async def queue(request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [], "queue_pending": []})

    app = web.Application()
    app.router.add_get("/history/{pid}", history)
    app.router.add_get("/queue", queue)
    return app


async def test_a_prompt_that_finishes_between_the_reads_is_done(aiohttp_server):
    server = await aiohttp_server(finishing_between_reads())
    async with ComfyClient(str(server.make_url("")), remote=False) as client:
        status = await client.status("p1")
    assert status.state == "done"
    assert status.images


async def test_a_prompt_in_neither_twice_is_unknown(aiohttp_server):
    async def empty(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/history/{pid}", empty)
    app.router.add_get("/queue", empty)
    server = await aiohttp_server(app)
    async with ComfyClient(str(server.make_url("")), remote=False) as client:
        status = await client.status("p1")
    assert status.state == "unknown" and "does not know" in status.error
