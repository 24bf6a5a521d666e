"""The ``google-cloud-storage`` client: imported lazily (the pack loads without the ``gcs``
dependency and fails with a pip hint only when a ``gs://`` URL is used), with the right
credentials and a connection pool big enough for parallel transfers.

Credentials: ``STORAGE_EMULATOR_HOST`` (tests, gcp-storage-emulator) means anonymous ones;
otherwise a service-account JSON from the secrets file, otherwise application-default ones.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..settings import Settings

#: connections :func:`make_client` keeps per host: the most requests a sync sends at once
#: (:attr:`~.gcs.GcsStorage.max_parallel`)
POOL_SIZE = 64


def _import_gcs() -> Any:
    try:
        from google.cloud import storage
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError(
            "gs:// storage needs google-cloud-storage>=3: pip install -U google-cloud-storage"
        ) from None
    return storage


def make_client(settings: "Settings | None" = None, pool_size: int = POOL_SIZE) -> Any:
    """A ``storage.Client`` with the right credentials, and a connection pool big enough for
    parallel sync (requests keeps 10 connections per host by default and drops the rest)."""
    client = _credentialed_client(settings)
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


def _credentialed_client(settings: "Settings | None") -> Any:
    storage = _import_gcs()
    project = settings.gcs_project if settings else None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "lora-cloud-emulator", credentials=AnonymousCredentials())
    sa_json = settings.secret("gcs_service_account_json") if settings else None
    if sa_json:
        from google.oauth2 import service_account

        try:
            info = json.loads(sa_json)
            creds = service_account.Credentials.from_service_account_info(
                info, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
            )
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                "gcs_service_account_json is not a valid service-account key (JSON with "
                "client_email and private_key)"
            ) from None
        return storage.Client(project=project or info.get("project_id"), credentials=creds)
    from google.auth import exceptions as auth_exc

    try:
        return storage.Client(project=project)
    except auth_exc.DefaultCredentialsError:
        raise ConfigError(
            "no Google Cloud credentials: run `gcloud auth application-default login` or "
            "`lora-cloud config set gcs_service_account_json \"$(cat key.json)\"`"
        ) from None


def api_base_url(connection: Any) -> str:
    """The API's base URL as the client itself computes it (the emulator's, when set)."""
    get = getattr(connection, "get_api_base_url_for_mtls", None)
    return get() if get is not None else connection.API_BASE_URL
