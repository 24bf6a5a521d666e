"""What a controller needs to start the trainer on an instance: a run id, the config hash that
makes launching idempotent, the instance environment (the narrowest credentials that work,
docs/credentials.md) and the provider's :class:`LaunchSpec`.

Pure functions over the spec, the settings and the bucket: the CLI and the service both use them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
import time
from typing import Callable

from ..errors import ConfigError
from ..providers.base import LaunchSpec, run_label, with_bucket_tag
from ..settings import Settings
from ..storage.base import Storage
from ..storage.layout import dataset_prefix
from .kohya_config import MODEL_FILES
from .spec import RunSpec
from ..storage.layout import model_key

# Run inside the image (and by the local provider, from its instance folder).
ENTRYPOINT = "-m comfy_lora_cloud.worker.entrypoint --workdir \"${LORA_CLOUD_WORKDIR:-$PWD}\""
DISK_GB = 80.0  # weights ~34 GB + image ~15 GB + dataset caches + two states + the LoRA, with headroom


def new_run_id(lora_name: str, clock: Callable[[], float] = time.time, *, bucket_id: str | None = None) -> str:
    """``<name>-<UTC time>-<4 hex>``: unique per launch, readable in listings and labels; with
    ``bucket_id`` (every launch passes its bucket's, ``storage/identity.py``) it ends with
    ``.b<bucket id>``, so the label says which bucket the run lives in (``providers/base.py``)."""
    slug = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in lora_name.lower()).strip("-_")[:40] or "run"
    run_id = f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(clock()))}-{secrets.token_hex(2)}"
    return with_bucket_tag(run_id, bucket_id) if bucket_id else run_id


def config_hash(spec: RunSpec, storage: Storage) -> str:
    """Same dataset contents + same training choices = same hash, whatever the run id: a
    re-queued graph finds the live run by it instead of renting a second machine. The limits it
    is launched under are no training choice (and runs recorded before them keep their hash)."""
    files = sorted((o.key, o.md5 or str(o.size)) for o in storage.list(dataset_prefix(spec.dataset)).objects)
    choice = {k: v for k, v in spec.to_dict().items()
              if k not in ("run_id", "status_interval", "log_interval", "limits")}
    blob = json.dumps({"dataset_files": files, "spec": choice}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def weights_cached(storage: Storage) -> bool:
    return all(storage.exists(model_key(f)) for f, _ in MODEL_FILES.values())


def trainer_env(spec: RunSpec, settings: Settings, storage: Storage, *, remote: bool = True) -> dict[str, str]:
    """The instance environment. Only what the trainer needs: the bucket, a bucket-scoped
    service account when the bucket is GCS, and an HF token only when the bucket lacks the
    weights. Never the vast.ai account key (the trainer destroys itself with vast.ai's own
    per-instance ``CONTAINER_API_KEY``)."""
    url = settings.storage_url
    if remote and not url.startswith("gs://"):
        raise ConfigError("a rented GPU cannot reach a local folder: set storage to a gs:// bucket "
                          "(lora-cloud config set storage gs://my-bucket)")
    env = {"LORA_CLOUD_STORAGE": url, "LORA_CLOUD_RUN_ID": spec.run_id, "LORA_CLOUD_VAST_URL": settings.vast_url}
    if settings.gcs_project:
        env["LORA_CLOUD_GCS_PROJECT"] = settings.gcs_project
    sa = settings.secret("gcs_service_account_json")
    if url.startswith("gs://") and remote:
        if not sa:
            raise ConfigError("the instance needs a service account for the bucket: see docs/credentials.md, then "
                              "lora-cloud config set gcs_service_account_json \"$(cat key.json)\"")
        env["LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON"] = sa
    env.update(hub_token_env(settings, weights_cached(storage)))
    return env


def hub_token_env(settings: Settings, cached: bool) -> dict[str, str]:
    """``HF_TOKEN`` for an instance only when the bucket lacks the base weights (the trainer's and
    the inference image's rule): a ConfigError when it lacks them and no token is set."""
    if cached:
        return {}
    token = settings.secret("hf_token")
    if not token:
        raise ConfigError("the bucket has no base weights in models/ and no Hugging Face token is set: accept "
                          "the FLUX.1-dev licence on huggingface.co and `lora-cloud config set hf_token`")
    return {"HF_TOKEN": token}


def launch_spec(spec: RunSpec, settings: Settings, env: dict[str, str], *, python: str = "python",
                interruptible: bool = False, bid: float | None = None) -> LaunchSpec:
    """The provider's launch request: the trainer image, the run's label (nothing secret in it)
    and the entrypoint as the on-start command (vast.ai's ssh runtype keeps SSH for people)."""
    return LaunchSpec(image=settings.trainer_image, label=run_label(spec.run_id), disk_gb=DISK_GB, env=env,
                      onstart=f"{shlex.quote(python)} {ENTRYPOINT}", interruptible=interruptible, bid=bid,
                      runtype="ssh")
