"""What the notifier hands to the edges: typed, frozen records, read by attribute in the CLI and
serialised by the routes with ``to_dict()`` (the JSON the sidebar reads: same keys, same order).
Never the webhook's URL or secret: only whether they are set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ledger import Entry


@dataclass(frozen=True)
class NotifySummary:
    """The channels as set now, whether a webhook is configured and signed, whether this machine
    can show desktop notifications, the latest deliveries (``recent``, newest first) and the
    ledger's damaged rows (``damaged``)."""

    toast: bool
    desktop: bool
    webhook: bool
    webhook_format: str
    webhook_configured: bool
    webhook_signed: bool
    desktop_here: bool
    recent: tuple[Entry, ...]
    damaged: tuple[Entry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"toast": self.toast, "desktop": self.desktop, "webhook": self.webhook,
                "webhook_format": self.webhook_format, "webhook_configured": self.webhook_configured,
                "webhook_signed": self.webhook_signed, "desktop_here": self.desktop_here,
                "recent": [e.to_dict() for e in self.recent], "damaged": [e.to_dict() for e in self.damaged]}
