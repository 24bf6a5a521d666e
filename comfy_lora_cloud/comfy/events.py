"""Live events for the sidebar, pushed through ComfyUI's websocket, and the loop that makes them.

The event names and what each carries are in :mod:`comfy_lora_cloud.service.events`; the sidebar
subscribes with ``api.addEventListener(name, ...)``.

The sender is injectable. In ComfyUI it is ``PromptServer.instance.send_sync(event, data,
sid=None)``: thread-safe, a broadcast to every open tab, imported lazily so this
module loads without ComfyUI.

The poller and the guard (the app's one guard pass: reconcile and the budget watchdog) run on the
process's one background loop (:class:`~..service.loop.Loop`), which ComfyUI's wiring builds and
also gives the app for the sessions' tunnels. Nodes run on per-prompt loops and routes on the
server loop; long-lived work belongs to neither. ComfyUI never runs shutdown hooks, so nothing
here needs one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Awaitable, Callable

from ..errors import redact
from ..service.app import App
from ..service.events import BUDGET_EVENT, GUARD_EVENT, INSTANCE_EVENT, RUN_EVENT
from ..service.loop import Loop

log = logging.getLogger(__name__)

RUN, INSTANCE, BUDGET = RUN_EVENT, INSTANCE_EVENT, BUDGET_EVENT  # the names live in service/events.py

Send = Callable[[str, dict[str, Any]], None]
GetApp = Callable[[], Awaitable[App]]


def comfy_send(event: str, data: dict[str, Any]) -> None:
    """Broadcast through ComfyUI's websocket (safe from any thread)."""
    from server import PromptServer  # ComfyUI's top-level module; only there at runtime

    PromptServer.instance.send_sync(event, data, sid=None)


class EventPoller:
    """Reads runs and instances from the app and sends what changed since last time. Budget
    events are not the poller's: the guard's watchdog sends each one once (also the month
    budget's 80 % and 100 %), through the app's sink, whoever runs the guard.

    Live runs are read every poll; a full scan (which also finds runs launched from another
    machine) happens every ``full_every`` polls, so a big bucket is not listed every few seconds.
    """

    def __init__(self, app: App, send: Send, *, full_every: int = 12):
        self.app, self.send = app, send
        self.full_every = full_every
        self._polls = 0
        self._run_sigs: dict[str, tuple[Any, ...]] = {}
        self._live: set[str] = set()
        self._instances_sig: tuple[Any, ...] | None = None

    async def poll_once(self) -> list[str]:
        """One round; returns the names of the events sent (tests assert on them)."""
        sent: list[str] = []
        full = self._polls % self.full_every == 0
        self._polls += 1
        if full:
            views = [await self.app.runs.get(v.id) if v.live else v for v in await self.app.runs.list()]
        else:  # live runs in detail (with their sample list)
            views = [await self.app.runs.get(run_id) for run_id in sorted(self._live)]
        for view in views:
            step = view.step if view.status is not None else None  # no report yet is not step 0
            sig = (view.state, step, view.loss, view.updated_at, view.error, view.cost_usd, len(view.samples or ()))
            (self._live.add if view.live else self._live.discard)(view.id)
            if self._run_sigs.get(view.id) != sig:
                self._run_sigs[view.id] = sig
                data = view.to_dict()
                data.pop("status", None)  # the trainer's raw report: the view's own fields carry it
                self.send(RUN, data)
                self.app.notify.observe(RUN, data)  # run done / failed / preempted -> notifications
                sent.append(RUN)
        instances = await self.app.instances.list()
        sig = tuple((i.id, i.state) for i in instances)
        if sig != self._instances_sig or any(i.billing for i in instances):
            self._instances_sig = sig
            self.send(INSTANCE, {"instances": [i.to_dict() for i in instances]})
            sent.append(INSTANCE)
        return sent


async def poll_forever(get_app: GetApp, send: Send, interval: float = 5.0,
                       sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Poll until cancelled. A failing round (bad settings, a flaky bucket) is logged and the
    next round tries again, building the app again if it could not be built."""
    poller: EventPoller | None = None
    while True:
        try:
            if poller is None:
                poller = EventPoller(await get_app(), send)
            await poller.poll_once()
        except Exception as exc:
            log.warning("lora_cloud event poll failed: %s", redact(str(exc)))
        await sleep(interval)


async def guard_forever(get_app: GetApp, *, interval: float = 30.0, grace_s: float = 120.0,
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """The app's one guard pass (reconcile + budget watchdog, the same as ``lora-cloud instances
    reconcile``) every ``interval`` s while a vast.ai key is set. The app re-reads its settings,
    so a budget changed from the CLI applies on the next round. The pass sends each problem it
    met to the sidebar once (``lora_cloud.guard``); a round that fails as a whole is logged, sent
    the same way, and the next round tries again."""
    while True:
        app: App | None = None
        try:
            app = await get_app()
            if app.has_vast_key():
                await app.guard_pass(grace_s=grace_s)  # it tells the sidebar about each problem, once
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = redact(getattr(exc, "message", None) or str(exc))
            log.warning("lora_cloud guard round failed: %s", message)
            if app is not None:
                app.emit(GUARD_EVENT, {"kind": "problem", "message": f"guard round failed: {message}"})
        await sleep(interval)


_background: list[concurrent.futures.Future[Any]] = []
_background_lock = threading.Lock()


def start_background(get_app: GetApp, send: Send = comfy_send, *, loop: Loop) -> list[concurrent.futures.Future[Any]]:
    """Start the event poller and the guard loop on ``loop`` (the process's one background loop,
    the one the app's tunnels live on), once; again only if one of them ended."""
    with _background_lock:
        if not _background or any(f.done() for f in _background):
            for f in _background:
                f.cancel()
            _background[:] = [loop.submit(poll_forever(get_app, send)), loop.submit(guard_forever(get_app))]
        return list(_background)
