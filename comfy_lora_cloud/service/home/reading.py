"""Reading rows that may be damaged: a number that must be finite, and a listing that hands a row
it cannot read to ``on_corrupt`` instead of failing (one bad row never hides the others)."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Callable, Iterable, Iterator, Mapping

from ...errors import CorruptRecord
from ...models import as_finite

log = logging.getLogger(__name__)
OnCorrupt = Callable[[CorruptRecord], None]


def warn(exc: CorruptRecord) -> None:
    log.warning("skipped: %s", exc.message)


finite = as_finite  # a stored number read back: finite, or None

def readable(rows: Iterable[sqlite3.Row | Mapping[str, Any]], decode: Callable[[Any], Any],
              on_corrupt: OnCorrupt) -> Iterator[Any]:
    for row in rows:
        try:
            yield decode(row)
        except CorruptRecord as exc:
            on_corrupt(exc)
