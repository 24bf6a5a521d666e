"""Following a run to its end and bringing its LoRA home: what ``train wait``, Await LoRA and
:meth:`~.control.Runs.wait` share. The bucket's ``runs/<id>/status.json`` is what they follow.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

from ...errors import TrainingError
from ...models import RunState, RunStatus
from ...storage import Storage
from ...storage.layout import lora_key
from ...training.status import read_status
from ..library import download_lora


async def wait_for_run(
    storage: Storage, run_id: str, *, poll_s: float = 5.0,
    on_status: Callable[[RunStatus], Awaitable[None] | None] | None = None,
    should_stop: Callable[[], bool] | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunStatus:
    """Follow ``runs/<id>/status.json`` until the run ends (or ``should_stop`` says so: the
    caller stops waiting, the paid run goes on). Returns the last status."""
    last: RunStatus | None = None
    while True:
        if should_stop is not None and should_stop():
            raise asyncio.CancelledError("stopped waiting")
        status = await asyncio.to_thread(read_status, storage, run_id)
        if status is not None:
            if on_status is not None and (last is None or status.updated_at != last.updated_at
                                          or status.state != last.state):
                result = on_status(status)
                if asyncio.iscoroutine(result):
                    await result
            last = status
            if status.state.is_terminal:
                return status
        await sleep(poll_s)


def fetch_lora(storage: Storage, status: RunStatus, dest_dir: str | Path, lora_name: str) -> Path:
    """Download a finished run's LoRA into ``dest_dir`` (through :func:`.library.download_lora`,
    the one LoRA download: checksum verified, never a half file under the LoRA's name).

    ``lora_name`` is the name this controller launched the run with: the status in the bucket is
    untrusted (the rented host can write it), so a status that names any other LoRA is refused
    rather than followed."""
    if status.state is not RunState.DONE or not status.lora:
        raise TrainingError(f"run {status.run_id} ended {status.state.value}: {status.error or status.message}")
    if status.lora != lora_key(lora_name):
        raise TrainingError(f"run {status.run_id} names an unexpected LoRA location {status.lora!r} "
                            f"(launched as {lora_name!r}); not downloading it")
    return download_lora(storage, lora_name, dest_dir)
