"""The one retry policy for what we call over the network (vast.ai from the controller and from the
rented GPU, webhooks, the SSH tunnel's reconnects):
which answers are worth another try, and how long to wait before it.

Throttling (429) and server errors (5xx) are retried; ``Retry-After`` is honoured up to a minute;
otherwise the wait is "full jitter" exponential backoff, so many clients retrying at once spread out.
"""

from __future__ import annotations

import random

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0


def backoff(attempt: int, *, base: float, cap: float, retry_after: str | None = None,
            rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1``."""
    rng = rng or random
    if retry_after:
        try:
            value = float(retry_after)
        except ValueError:
            value = -1.0
        if 0 <= value <= MAX_RETRY_AFTER:
            return value + rng.uniform(0, base / 4)
    return rng.uniform(0, min(cap, base * 2 ** attempt))
