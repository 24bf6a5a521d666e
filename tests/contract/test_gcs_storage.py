"""The storage contract against GCS: the real google-cloud-storage client and gcp-storage-emulator.

The emulator ignores generation preconditions, so the client's HTTP session is a
:class:`GcsSemantics` transport that enforces ``ifGenerationMatch`` as GCS does (the requests
themselves are real and go to the emulator); it also corrupts chosen objects on download.
"""

from __future__ import annotations

import pytest

from comfy_lora_cloud.storage.gcs import GcsStorage
from comfy_lora_cloud.storage.gcs_errors import make_retry
from tests.contract.gcs_transports import GcsSemantics, session_with
from tests.contract.storage_contract import StorageContract


class TestGcsStorage(StorageContract):
    @pytest.fixture
    def storage(self, gcs_env, gcs_bucket):
        self.transport = GcsSemantics(gcs_env.url)
        client = gcs_env.client(session_with(self.transport))
        return GcsStorage(gcs_bucket, "lora-cloud", client=client, retry=make_retry(initial=0.01, timeout=10))

    def corrupt(self, storage: GcsStorage, key: str) -> None:
        self.transport.corrupted.add(storage.prefix + key)
