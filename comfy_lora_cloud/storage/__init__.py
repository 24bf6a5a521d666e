"""Where data lives: one :class:`Storage` protocol, a local folder and Google Cloud Storage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import AsyncStorage, Checksums, Listing, ObjectInfo, Storage, checksum_bytes, checksum_file
from .landing import sweep_partials
from .local import LocalStorage

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "AsyncStorage", "Checksums", "Listing", "LocalStorage", "ObjectInfo", "Storage",
    "checksum_bytes", "checksum_file", "open_storage", "sweep_partials",
]


def open_storage(url: str | None = None, settings: "Settings | None" = None) -> Storage:
    """``gs://bucket[/prefix]`` -> :class:`GcsStorage`; anything else is a local folder."""
    if url is None:
        if settings is None:
            from ..settings import Settings

            settings = Settings.load()
        url = settings.storage_url
    if url.startswith("gs://"):
        from .gcs import GcsStorage

        return GcsStorage.from_url(url, settings=settings)
    return LocalStorage(url)
