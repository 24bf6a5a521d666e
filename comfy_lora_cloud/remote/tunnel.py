"""SSH connections to an instance and a local port forward that survives a dropped link.

::

    tunnel = await Tunnel(target, key_path, hostkeys, remote_port=8188).start()
    tunnel.url            # http://127.0.0.1:<free port>, reaching the instance's 127.0.0.1:8188
    await tunnel.close()

:func:`connect` is the one way in: the pack's own key, no agent, no ``~/.ssh/config``, the
instance's host key pinned on first contact and checked on every later connection
(:mod:`.hostkeys`), keepalives so a dead link is noticed within ``keepalive_s * keepalive_max``
seconds. :func:`tunnel_error` maps every asyncssh and socket failure to a
:class:`~..errors.TunnelError` whose message says what happened and what to do.

:class:`Tunnel` owns its local listener (``127.0.0.1`` only) and opens one SSH ``direct-tcpip``
channel per incoming connection (as ``ssh -L`` does). When the SSH link drops it reconnects in
the background with backoff while the local port stays the same, so URLs handed out stay valid;
a connection that arrives meanwhile waits for the link (up to ``wait_for_link_s``). A changed
host key on reconnect is final: the tunnel fails and refuses every connection.

Everything here is bound to the event loop it was started on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import TunnelError
from ..retry import backoff
from .hostkeys import HostKeyChanged, HostKeyStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    instance: str  # what the host key is pinned to, e.g. "vast:123"

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port} (instance {self.instance})"


def tunnel_error(exc: BaseException, target: SshTarget | None = None, *, what: str = "connect") -> TunnelError:
    """The one mapping of SSH and socket failures to a clear :class:`TunnelError`."""
    if isinstance(exc, TunnelError):
        return exc
    import asyncssh

    where = f"{target.host}:{target.port}" if target else "the instance"
    inst = f"instance {target.instance}" if target else "the instance"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyChanged(f"{inst} showed an SSH host key that does not match the one recorded on first "
                              f"contact; refusing to connect ({exc.reason}). Destroy the session if the instance "
                              "was rebuilt, then start a new one")
    if isinstance(exc, asyncssh.PermissionDenied):
        return TunnelError(f"{inst} refused the pack's SSH key at {where}: the key may not be registered with "
                           "vast.ai yet (it is added when a session starts), or the instance was created before it")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return TunnelError(f"{inst} would not forward to its ComfyUI ({exc.reason}): ComfyUI may still be starting")
    if isinstance(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError)):
        return TunnelError(f"the SSH connection to {where} was closed ({exc.reason or type(exc).__name__})")
    if isinstance(exc, asyncssh.Error):
        return TunnelError(f"SSH to {where} failed: {exc.reason or type(exc).__name__}")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TunnelError(f"no SSH answer from {where} in time: the instance may still be booting, or the "
                           "network drops the connection")
    if isinstance(exc, socket.gaierror):
        return TunnelError(f"cannot resolve {target.host if target else 'the SSH host'}: {exc.strerror}")
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return TunnelError(f"nothing accepts SSH at {where} yet: the instance may still be starting")
    if isinstance(exc, OSError):
        return TunnelError(f"cannot reach {where} over SSH: {exc.strerror or exc}")
    return TunnelError(f"SSH {what} to {where} failed: {type(exc).__name__}: {exc}")


async def connect(target: SshTarget, key_path: str | Path, hostkeys: HostKeyStore, *, timeout: float = 20.0,
                  keepalive_s: float = 15.0, keepalive_max: int = 3) -> Any:
    """An ``asyncssh.SSHClientConnection`` to ``target`` with the pack's key; the host key is
    pinned on first contact and must match on every later connection."""
    import asyncssh

    recorded = await asyncio.to_thread(hostkeys.get, target.instance)
    try:
        conn = await asyncio.wait_for(asyncssh.connect(
            target.host, target.port, username=target.user, client_keys=[str(key_path)], passphrase=None,
            known_hosts=([asyncssh.import_public_key(recorded)], [], []) if recorded else None, agent_path=None, config=None,
            preferred_auth="publickey", keepalive_interval=keepalive_s, keepalive_count_max=keepalive_max,
            connect_timeout=timeout, login_timeout=timeout), timeout + 1.0)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a clear TunnelError
        raise tunnel_error(exc, target) from None
    if recorded is None:
        shown = conn.get_server_host_key()
        try:
            if shown is None:
                raise TunnelError(f"instance {target.instance} showed no SSH host key")
            line = shown.export_public_key("openssh").decode()
            await asyncio.to_thread(hostkeys.pin, target.instance, line, target.host, target.port)
        except BaseException:
            conn.abort()
            raise
        log.info("recorded the SSH host key of instance %s (%s)", target.instance, shown.get_fingerprint())
    return conn


async def _pipe(reader: Any, writer: Any) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except Exception:  # noqa: BLE001 - either side went away: the other is closed below
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


class Tunnel:
    """A local port reaching ``remote_host:remote_port`` on the instance, over SSH, that reconnects."""

    def __init__(self, target: SshTarget, key_path: str | Path, hostkeys: HostKeyStore, remote_port: int, *,
                 remote_host: str = "127.0.0.1", local_port: int = 0, connect_timeout: float = 20.0,
                 keepalive_s: float = 15.0, keepalive_max: int = 3, retry_base: float = 0.5,
                 retry_cap: float = 10.0, wait_for_link_s: float = 60.0,
                 on_change: Callable[["Tunnel"], None] | None = None):
        self.target = target
        self.key_path = Path(key_path)
        self.hostkeys = hostkeys
        self.remote_host, self.remote_port = remote_host, int(remote_port)
        self.connect_timeout = connect_timeout
        self.keepalive_s, self.keepalive_max = keepalive_s, keepalive_max
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self.wait_for_link_s = wait_for_link_s
        self.on_change = on_change
        self.state = "new"  # new | up | reconnecting | failed | closed
        self.reconnects = 0
        self.last_error: str | None = None
        self._want_port = local_port
        self._conn: Any = None
        self._up = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.local_port = 0

    # ---- life cycle ----------------------------------------------------------------------------
    async def start(self) -> "Tunnel":
        """Connect (a failure raises :class:`TunnelError`), then listen on ``127.0.0.1``."""
        self._conn = await self._connect()
        try:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._want_port)
        except OSError as exc:
            self._conn.abort()
            raise TunnelError(f"cannot listen on 127.0.0.1:{self._want_port}: {exc.strerror}") from None
        self.local_port = self._server.sockets[0].getsockname()[1]
        self._set("up")
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def alive(self) -> bool:
        return self.state in ("up", "reconnecting")

    async def close(self) -> None:
        self._set("closed")
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        if self._conn is not None:
            self._conn.abort()
        self._up.set()  # wake waiters: they see the closed state

    def drop(self) -> None:
        """Cut the SSH link as a network failure would (tests; the tunnel reconnects)."""
        if self._conn is not None:
            self._conn.abort()

    async def wait_up(self, timeout: float) -> None:
        """Until the link is up; TunnelError when it failed, closed, or did not come back in time."""
        try:
            await asyncio.wait_for(self._wait_link(), timeout)
        except asyncio.TimeoutError:
            raise TunnelError(f"the SSH link to {self.target} did not come back within {timeout:g} s"
                              + (f": {self.last_error}" if self.last_error else "")) from None

    # ---- the link ------------------------------------------------------------------------------
    def _set(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "up":
            self._up.set()
        elif state == "reconnecting":
            self._up.clear()
        if self.on_change is not None:
            with contextlib.suppress(Exception):
                self.on_change(self)

    async def _connect(self) -> Any:
        return await connect(self.target, self.key_path, self.hostkeys, timeout=self.connect_timeout,
                             keepalive_s=self.keepalive_s, keepalive_max=self.keepalive_max)

    async def _supervise(self) -> None:
        attempt = 0
        while self.state not in ("closed", "failed"):
            await self._conn.wait_closed()
            if self.state == "closed":
                return
            log.warning("SSH link to %s dropped; reconnecting", self.target)
            self._set("reconnecting")
            while self.state == "reconnecting":
                try:
                    self._conn = await self._connect()
                except HostKeyChanged as exc:
                    self.last_error = exc.message
                    log.error("%s", exc.message)
                    self._set("failed")
                    self._up.set()
                    return
                except TunnelError as exc:
                    self.last_error = exc.message
                    delay = backoff(attempt, base=self.retry_base, cap=self.retry_cap)
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                self.reconnects += 1
                self.last_error = None
                log.info("SSH link to %s is back (reconnect %d)", self.target, self.reconnects)
                self._set("up")

    async def _wait_link(self) -> Any:
        while True:
            if self.state == "up" and self._conn is not None:
                return self._conn
            if self.state in ("failed", "closed"):
                raise TunnelError(f"the tunnel to {self.target} is {self.state}"
                                  + (f": {self.last_error}" if self.last_error else ""))
            await self._up.wait()
            if self.state == "reconnecting":
                await asyncio.sleep(0.05)

    async def channel(self) -> tuple[Any, Any]:
        """A new stream pair to the remote port (waits for the link when it is reconnecting)."""
        conn = await asyncio.wait_for(self._wait_link(), self.wait_for_link_s)
        try:
            return await conn.open_connection(self.remote_host, self.remote_port)
        except Exception as exc:  # noqa: BLE001
            raise tunnel_error(exc, self.target, what="forward") from None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            try:
                remote_reader, remote_writer = await self.channel()
            except (TunnelError, asyncio.TimeoutError) as exc:
                log.info("tunnel %s: connection refused: %s", self.local_port, getattr(exc, "message", exc))
                return
            try:
                await asyncio.gather(_pipe(reader, remote_writer), _pipe(remote_reader, writer))
            finally:
                with contextlib.suppress(Exception):
                    remote_writer.close()
        except asyncio.CancelledError:
            pass  # the tunnel is closing: its connections go with it
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._handlers.discard(task)
