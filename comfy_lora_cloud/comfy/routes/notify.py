"""Routes for notification settings (service/notify/). Added by :func:`register`, called from
:func:`~.register_routes`, behind the same HTTP guard. No answer holds the webhook's URL or
secret: only whether they are set.

- ``GET  /notify``            channels on or off, webhook configured and signed, latest deliveries
- ``POST /notify/settings``   ``{notify_toast, notify_desktop, notify_webhook: bool, webhook_format}``
- ``POST /notify/test``       a test notification on every channel that is on
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from . import http_guard
from .answers import Guarded


def register(r: Guarded) -> None:
    @r.get("/notify")
    async def notify_summary(request: web.Request) -> web.Response:
        return web.json_response((await asyncio.to_thread((await r.app()).notify.summary)).to_dict())

    @r.mutate("POST", "/notify/settings")
    async def notify_settings(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request)
        notify = (await r.app()).notify
        return web.json_response((await asyncio.to_thread(notify.set_channels, body)).to_dict())

    @r.mutate("POST", "/notify/test")
    async def notify_test(request: web.Request) -> web.Response:
        return web.json_response({"key": (await r.app()).notify.test()})
