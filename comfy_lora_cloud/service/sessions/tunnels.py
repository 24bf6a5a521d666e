"""This process's tunnels to the sessions' ComfyUIs.

A tunnel (``remote.tunnel.Tunnel``: a local port forward over SSH with keepalive and reconnect)
is bound to an event loop, and one App serves several (ComfyUI's server loop, each prompt's
loop); so every tunnel of the process lives on the process's one background loop
(:class:`~..loop.Loop`, given to the app) and any loop may ask for one (:class:`Tunnels`). A
process that holds a tunnel for others (the CLI's ``comfy tunnel``, so a URL outlives the
command) is recorded as the session's keeper (:func:`keeper`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...models import Session

if TYPE_CHECKING:
    from ..loop import Loop

KEEPER_KEY = "sessions:keeper:"  # + session id: {"pid", "port", "url"} of the process holding its tunnel


class Tunnels:
    """The open tunnels, by session id, all on the process's one background loop."""

    def __init__(self, loop: Loop):
        self.loop = loop
        self._open: dict[str, Any] = {}  # session id -> remote.tunnel.Tunnel (on that loop)

    def get(self, session_id: str) -> Any | None:
        return self._open.get(session_id)

    def alive(self, session_id: str) -> bool:
        tunnel = self._open.get(session_id)
        return tunnel is not None and tunnel.alive

    async def open(self, session: Session, key_path: Path, ssh_user: str, host_keys: Any) -> Any:
        """The session's tunnel: the one open when it still goes to the session's host, else a new one."""
        return await self.loop.run(self._open_tunnel(session, key_path, ssh_user, host_keys))

    async def _open_tunnel(self, session: Session, key_path: Path, ssh_user: str, host_keys: Any) -> Any:
        from ...remote.tunnel import SshTarget, Tunnel

        current = self._open.get(session.id)
        target = SshTarget(str(session.ssh_host), int(session.ssh_port or 22), ssh_user,
                           f"{session.provider}:{session.instance_id}")
        if current is not None and current.alive and current.target == target:
            return current
        if current is not None:
            await current.close()
        tunnel = await Tunnel(target, key_path, host_keys, session.remote_port).start()
        self._open[session.id] = tunnel
        return tunnel

    async def close(self, session_id: str) -> None:
        tunnel = self._open.pop(session_id, None)
        if tunnel is not None:
            await self.loop.run(tunnel.close())


@dataclass(frozen=True)
class TunnelKeeper:
    """The process holding a session's tunnel for others: its pid, its local port and URL."""

    pid: int
    port: int | None
    url: str

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.port, "url": self.url}


def keeper(state: Any, session_id: str) -> TunnelKeeper | None:
    """The live tunnel keeper of a session, or None (none recorded, its process gone, or a record
    that does not say where it listens)."""
    from ...storage.base import pid_alive

    raw = state.get_kv(KEEPER_KEY + session_id)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("url"), str):
        return None
    port = data.get("port")
    if not pid_alive(data["pid"]):
        return None
    return TunnelKeeper(data["pid"], port if isinstance(port, int) and not isinstance(port, bool) else None, data["url"])


def record_keeper(state: Any, session_id: str, pid: int | None, port: int | None = None) -> None:
    value = json.dumps({"pid": pid, "port": port, "url": f"http://127.0.0.1:{port}"}) if pid else ""
    state.set_kv(KEEPER_KEY + session_id, value)
