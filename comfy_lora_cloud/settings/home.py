"""Which folder is the home: ``LORA_CLOUD_HOME``, else the per-user config folder, unless a
caller has named another for the duration of a block (:func:`home_override`)."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from pathlib import Path
from typing import Iterator

_home_override: contextvars.ContextVar[Path | None] = contextvars.ContextVar("lora_cloud_home", default=None)


def default_home() -> Path:
    """The per-user config folder (``LORA_CLOUD_HOME`` wins)."""
    env = os.environ.get("LORA_CLOUD_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "lora-cloud"


def current_home() -> Path:
    return _home_override.get() or default_home()


@contextlib.contextmanager
def home_override(path: Path) -> Iterator[None]:
    token = _home_override.set(path)
    try:
        yield
    finally:
        _home_override.reset(token)
