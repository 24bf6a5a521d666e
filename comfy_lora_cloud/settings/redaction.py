"""Log redaction: a filter that masks registered secrets and key-like strings in every record,
and its installation on the pack's logger and the root handlers."""

from __future__ import annotations

import logging

from ..errors import redact


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets and key-like strings in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger_name: str = "comfy_lora_cloud") -> None:
    lg = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactingFilter) for f in lg.filters):
        lg.addFilter(RedactingFilter())
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
