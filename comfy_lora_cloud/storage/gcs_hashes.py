"""Checksums as GCS writes them (base64 crc32c and md5, the ``X-Goog-Hash`` header), and
files that hash the bytes passing through them, so a transfer is verified without reading its
bytes twice."""

from __future__ import annotations

import base64
from typing import BinaryIO

import google_crc32c

from .base import Checksums


class HashingReader:
    """A readable file that computes the crc32c of its bytes once, as they are first read:
    a chunk the client re-reads after a retry (it seeks back) is not hashed twice."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._crc = google_crc32c.Checksum()
        self.hashed = 0  # bytes hashed so far: everything before this offset

    def read(self, n: int = -1) -> bytes:
        start = self._f.tell()
        data = self._f.read(n)
        end = start + len(data)
        if end > self.hashed and start <= self.hashed:
            self._crc.update(data[self.hashed - start:])
            self.hashed = end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def checksums(self) -> Checksums:
        """Size and crc32c (md5 left empty: GCS computes it, and reports it to compare)."""
        return Checksums(self.hashed, "", base64.b64encode(self._crc.digest()).decode())


class HashingWriter:
    """Wraps a writable file and computes the crc32c of what passes through."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._crc = google_crc32c.Checksum()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._crc.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    @property
    def crc32c(self) -> str:
        return base64.b64encode(self._crc.digest()).decode()


def b64_to_hex(value: str | None) -> str | None:
    return base64.b64decode(value).hex() if value else None


def crc_only(data: bytes) -> Checksums:
    """The crc32c of bytes about to be sent (what verifies the transfer); their md5 is what GCS
    reports once it has them, so it is not computed here."""
    return Checksums(len(data), "", base64.b64encode(google_crc32c.Checksum(data).digest()).decode())


def goog_hashes(header: str) -> dict[str, str]:
    """``crc32c=...,md5=...`` (as GCS sends ``X-Goog-Hash``) as a dict."""
    out = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and value:
            out[name.strip().lower()] = value.strip()
    return out
