"""What a run leaves in the bucket for people to look at: its log, its sample images, and what it
has cost so far. The one home of ``lora-cloud train logs RUN``, ``train samples RUN --out DIR``
and the "$ so far" of ``train status --follow`` (reached as ``app.outputs``).

Bucket content is untrusted (a rented host writes it): the log is read size-capped and cleaned
of terminal control sequences before anyone prints it, and samples go through the same
allowlist as the sidebar's (:meth:`~.runs.Runs.sample_listing`: image names a route could serve,
judged by their bytes), then the storage's checksum-verified download.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ConfigError, ObjectNotFound, redact
from ...models import Run, RunState, validate_name
from ...storage.base import read_record_bytes
from ...storage.layout import run_key
from ..money import CostLedger
from .views import RunLog, SamplesDownload

if TYPE_CHECKING:
    from ..core import Core
    from .control import Runs

MAX_LOG_BYTES = 32 * 1024 * 1024  # the trainer re-uploads its whole console log; a bigger one is not ours
# C0 controls but tab and newline, DEL, C1 controls (ESC sequences recolour or rewrite a terminal)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Text from the bucket made safe to print: no escape sequences, no carriage-return tricks,
    secrets masked."""
    return redact(_CONTROL.sub("?", text.replace("\r\n", "\n")))


class RunOutputs:
    """A run's log, samples and spend so far, for every edge."""

    def __init__(self, core: Core, runs: Runs):
        self.core = core
        self.runs = runs

    async def log(self, run_id: str, *, tail: int = 200) -> RunLog:
        """The last ``tail`` lines of ``runs/<id>/logs/trainer.log`` (0: all of it)."""
        from ...training.status import LOG

        run_id = validate_name(run_id, "run id")
        if tail < 0:
            raise ConfigError("tail must be 0 (everything) or more")

        def read() -> RunLog:
            try:
                body = read_record_bytes(self.core.storage, run_key(run_id, LOG), MAX_LOG_BYTES)
            except ObjectNotFound:
                raise ObjectNotFound(self._nothing_yet(run_id, "no log")) from None
            lines = clean_text(body.decode("utf-8", errors="replace")).splitlines()
            shown = lines[-tail:] if tail else lines
            return RunLog(run_id, tuple(shown), len(lines))

        return await asyncio.to_thread(read)

    async def download_samples(self, run_id: str, dest: str | Path) -> SamplesDownload:
        """Every sample image the trainer uploaded into ``dest`` (created); files already there
        with the same bytes are kept. Skipped entries are reported in ``problems``."""
        run_id = validate_name(run_id, "run id")
        dest = Path(dest).expanduser()
        if dest.exists() and not dest.is_dir():
            raise ConfigError(f"{dest} is a file: --out needs a folder (it is created if missing)")
        found = await self.runs.sample_listing(run_id)
        if not found.samples and not found.problems:
            raise ObjectNotFound(self._nothing_yet(run_id, "no sample images"))

        def fetch() -> list[str]:
            from ..library import matches_object as _matches  # the one checksum rule

            storage = self.core.storage
            dest.mkdir(parents=True, exist_ok=True)
            written = []
            for name in found.samples:
                key = run_key(run_id, f"samples/{name}")
                target = dest / name
                if target.is_file() and _matches(target, storage.stat(key)):
                    continue
                storage.download_file(key, target)
                written.append(name)
            return written

        written = await asyncio.to_thread(fetch)
        return SamplesDownload(run_id, dest, found.samples, tuple(written), found.problems)

    def spend_so_far(self, run_id: str, now: float | None = None) -> float | None:
        """Dollars a run has cost until now: the ledger when the guard has booked it, else its
        price times the time since it was launched from here. None for a run launched elsewhere
        (this controller does not know its price)."""
        record: Run | None = self.core.state.get_run(run_id)
        if record is None:
            return None
        booked = CostLedger(self.core.state, self.core.clock).run_usd(run_id)
        end = record.updated_at if record.state.is_terminal else (now if now is not None else time.time())
        running = record.dph * max(0.0, end - record.created_at) / 3600.0 if record.state not in (
            RunState.PENDING,) else 0.0
        return round(max(booked, running), 4)

    def _nothing_yet(self, run_id: str, what: str) -> str:
        from ...training.status import read_status

        try:
            known = self.core.state.get_run(run_id) is not None or read_status(self.core.storage, run_id) is not None
        except Exception:  # noqa: BLE001 - only for choosing the message
            known = False
        if not known:
            return f"no run {run_id!r}: not launched from here and nothing in {self.core.storage.url} (see: lora-cloud train status)"
        return f"run {run_id} has {what} in the bucket yet"
