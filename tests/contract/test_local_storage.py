"""The storage contract against the local-folder store (the embedded default)."""

from __future__ import annotations

import os

import pytest

from comfy_lora_cloud.storage.local import LocalStorage
from tests.contract.storage_contract import StorageContract


class TestLocalStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        return LocalStorage(tmp_path / "bucket")

    def corrupt(self, storage: LocalStorage, key: str) -> None:
        """Flip one byte in place, keeping size and mtime, so only the bytes give it away."""
        path = storage.root / key
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
