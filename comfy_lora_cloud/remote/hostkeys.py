"""Each instance's SSH host key: recorded on first contact, checked on every reconnect.

vast.ai hands out proxy endpoints (``sshN.vast.ai:port``) that another instance may get later,
so a key is pinned to the *instance* (``vast:<id>``), not to the host and port. The first
connection to an instance trusts and records the key it is shown (there is no other source to
learn it from); every later one, the tunnel's reconnects included, must be shown that key or is
refused (:class:`HostKeyChanged`).

The record is a small JSON file (0600) in the pack's home, shared by every process of the
controller (ComfyUI, the CLI, a tunnel keeper); writes are atomic and serialised with a lock.
A record that cannot be read, or is JSON of another shape (``[]``, a key that is not a key), is
damaged: every connection is refused with a :class:`~..errors.TunnelError` naming the file until
it is moved aside. Reading it as empty would trust whatever key the next connection is shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

from .. import jsonsafe
from ..errors import TunnelError

FILE_NAME = "host_keys.json"
MAX_FILE_BYTES = 4 * 1024 * 1024  # ~20 000 instances' keys; a bigger file is not ours


class HostKeyChanged(TunnelError):
    """The instance showed a different host key than on first contact."""


def _key_line(key: str) -> str:
    """``type base64`` without the comment, which is not part of the key."""
    parts = key.split()
    if len(parts) < 2:
        raise TunnelError(f"not an SSH public key: {key[:40]!r}")
    return f"{parts[0]} {parts[1]}"


class HostKeyStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows: last writer wins
                pass
            yield
        finally:
            os.close(fd)

    def _damaged(self, why: str) -> TunnelError:
        return TunnelError(f"the host key record {self.path} is damaged ({why}); without it no instance can be "
                           "verified, so no connection is made: move it aside to start a new one (every instance "
                           "is then trusted on first contact again)")

    def _read(self) -> dict[str, dict]:
        try:
            data = jsonsafe.loads(self.path.read_bytes(), max_bytes=MAX_FILE_BYTES)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise self._damaged(str(exc)) from None
        if not isinstance(data, dict):
            raise self._damaged(f"a JSON {type(data).__name__}, not an object of instances")
        for instance, entry in data.items():
            key = entry.get("key") if isinstance(entry, dict) else None
            if not isinstance(key, str) or len(key.split()) < 2:
                raise self._damaged(f"the entry of {instance[:60]!r} has no SSH key")
        return data

    def get(self, instance: str) -> str | None:
        entry = self._read().get(instance)
        return entry["key"] if entry is not None else None

    def pin(self, instance: str, key: str, host: str = "", port: int | None = None) -> str:
        """Record ``key`` for ``instance`` unless one is recorded already; returns the recorded
        one (a different key raises :class:`HostKeyChanged`)."""
        line = _key_line(key)
        with self._locked():
            data = self._read()
            entry = data.get(instance)
            if entry is not None:
                check(instance, entry["key"], line)
                return entry["key"]
            data[instance] = {"key": line, "host": host, "port": port, "at": time.time()}
            tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.path)
            return line

    def forget(self, instance: str) -> None:
        """Drop an instance's key (it was destroyed; its endpoint may serve another one later)."""
        with self._locked():
            data = self._read()
            if data.pop(instance, None) is not None:
                tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=1)
                os.replace(tmp, self.path)


def check(instance: str, recorded: str, shown: str) -> None:
    """Raise :class:`HostKeyChanged` when ``shown`` is not the ``recorded`` key."""
    if _key_line(recorded) != _key_line(shown):
        raise HostKeyChanged(
            f"instance {instance} showed a different SSH host key than on first contact "
            f"({_key_line(shown).split()[0]}); refusing to connect: the endpoint may now belong to someone "
            "else. Destroy the session if the instance was rebuilt, then start a new one")
