"""What a session's instance is rented with: the cheapest offer that fits inference
(:func:`choose_offer`), the disk, the image's start script and its environment (:func:`instance_env`)."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...models import Session
from ...providers.base import OfferRequest, Provider
from ...storage import layout
from ...training import inference
from ...training.launch import hub_token_env
from .request import SessionRequest

DISK_GB = 80.0  # the image (~20 GB), fp8 weights (~17 GB; fp16 ~34 GB), LoRAs and outputs
START_SCRIPT = 'bash "${LORA_CLOUD_START_SCRIPT:-/opt/lora-cloud/start.sh}"'


def instance_env(settings: Any, session: Session, storage: Any) -> dict[str, str]:
    """What the image needs, nothing more: the bucket (with a bucket-scoped service account),
    the session's limits, and an HF token only while the bucket lacks the weights. Blocking."""
    url = settings.storage_url
    if not url.startswith("gs://"):
        raise ConfigError("a rented GPU cannot reach a local folder: set storage to a gs:// bucket "
                          "(lora-cloud config set storage gs://my-bucket)")
    sa = settings.secret("gcs_service_account_json")
    if not sa:
        raise ConfigError("the instance needs a service account for the bucket: see docs/credentials.md, then "
                          "lora-cloud config set gcs_service_account_json - < key.json")
    env = {inference.ENV_STORAGE: url, inference.ENV_SESSION: session.id,
           "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": sa, "LORA_CLOUD_VAST_URL": settings.vast_url,
           inference.ENV_IDLE: f"{session.idle_minutes:g}", inference.ENV_MAX_HOURS: f"{session.max_hours:g}",
           inference.ENV_PRECISION: session.precision, inference.ENV_PORT: str(session.remote_port)}
    if settings.gcs_project:
        env["LORA_CLOUD_GCS_PROJECT"] = settings.gcs_project
    files = inference.model_files(session.precision).values()
    env.update(hub_token_env(settings, all(storage.exists(layout.model_key(f)) for f, _ in files)))
    return env


async def choose_offer(provider: Provider, req: SessionRequest, gpu_name: str | None,
                       gpu_vram: float | None, max_dph: float) -> Any:
    """The cheapest offer that fits (then the most reliable), under ``max_dph``."""
    from ...errors import OfferUnavailable

    offers = await provider.search(OfferRequest(
        gpu_names=[gpu_name] if gpu_name else [], min_vram_gb=req.vram_gb if not gpu_name else 0.0,
        min_disk_gb=DISK_GB, max_dph=max_dph or None, min_reliability=0.9, allocated_storage_gb=DISK_GB))
    offers = [o for o in offers if o.dph_total > 0]
    if not offers:
        what = gpu_name or f"{req.vram_gb:g} GB of VRAM"
        raise OfferUnavailable(f"no vast.ai offer with {what} under ${max_dph:g}/hr (max_dph) right now")
    return min(offers, key=lambda o: (o.dph_total, -o.reliability))
