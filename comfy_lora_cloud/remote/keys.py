"""The pack's own SSH key pair: ed25519, created on first use under the pack's home, mode 0600.

A dedicated key (never the user's ``~/.ssh/id_*``): it is registered with vast.ai so rented
instances accept it, and it can be revoked there without touching anything else the user owns.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, TunnelError

KEY_NAME = "id_ed25519"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_key: str  # one OpenSSH line: "ssh-ed25519 AAAA... comment"

    @property
    def fingerprint(self) -> str:
        import asyncssh

        return asyncssh.import_public_key(self.public_key).get_fingerprint()


def _import_asyncssh():
    try:
        import asyncssh
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ConfigError("SSH needs asyncssh: pip install 'asyncssh>=2.14'") from None
    return asyncssh


def ensure_keypair(folder: str | Path, name: str = KEY_NAME) -> KeyPair:
    """The key pair in ``folder`` (``<name>`` and ``<name>.pub``), created when missing.

    The private key is written 0600 from the start (never readable by others, not even for a
    moment); an existing one that is group- or world-readable is narrowed to 0600."""
    asyncssh = _import_asyncssh()
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)
    private = folder / name
    public = folder / f"{name}.pub"
    if private.is_file():
        if private.stat().st_mode & 0o077:
            os.chmod(private, 0o600)
        try:
            key = asyncssh.read_private_key(str(private))
        except (asyncssh.KeyImportError, OSError, ValueError) as exc:
            raise TunnelError(f"the SSH key {private} cannot be read ({exc}); move it aside and a new one is "
                              "made on the next use") from None
        line = key.export_public_key("openssh").decode().strip()
        if not public.is_file() or public.read_text().split()[:2] != line.split()[:2]:
            public.write_text(line + "\n")
        return KeyPair(private, public.read_text().strip())
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"lora-cloud@{socket.gethostname()}")
    tmp = private.with_name(f".{name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key("openssh"))
        os.replace(tmp, private)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    line = key.export_public_key("openssh").decode().strip()
    public.write_text(line + "\n")
    return KeyPair(private, line)
