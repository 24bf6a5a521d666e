"""The per-install token that routes which spend money or delete data require.

ComfyUI gives routes no CSRF protection worth the name: any
local process may call them, and a page can send ``Origin: null``. So mutating routes want
``X-LoRA-Cloud-Token``, which only a same-origin page can read (``GET /lora_cloud/api/token``).
The file lives in the lora-cloud home with mode 0600, never in ComfyUI's ``user/`` folder, which
any page can read through ``/api/userdata``.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "comfy_token"
HEADER = "X-LoRA-Cloud-Token"


def load_or_create_token(home: Path) -> str:
    """The token in ``home/comfy_token``, created (0600, atomically) on first use."""
    path = Path(home) / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
        if len(token) >= 32:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token)
        os.chmod(tmp, 0o600)
        try:  # first writer wins, so two processes starting together agree on one token
            os.link(tmp, path)
        except FileExistsError:
            existing = path.read_text(encoding="ascii").strip()
            if len(existing) >= 32:
                return existing
            os.replace(tmp, path)  # a damaged file: replace it
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
