"""The settings object: environment ``LORA_CLOUD_*`` first, then the secrets file, then
``config.toml`` in the home folder, then defaults; each field checked as it is read.

Secrets (API keys, tokens, service-account JSON, webhook URL) are ``SecretStr`` everywhere, so a
``repr``, a log line or a JSON dump shows ``**********``; :meth:`Settings.masked` is what
``lora-cloud config show`` prints.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Literal, Mapping

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..addresses import literal_host_problem
from ..errors import ConfigError, register_secret
from .home import current_home, default_home, home_override
from .sources import CONFIG_FILE, SECRETS_FILE, TomlFileSource, given_files
from .values import check_http_url, check_storage_url, split_host_list

VAST_URL = "https://console.vast.ai"  # vast.ai's API, for the controller and the rented GPU alike
SECRET_KEYS = ("vast_api_key", "gcs_service_account_json", "hf_token", "webhook_url", "webhook_secret")

# the largest budgets accepted: beyond them a typo (an extra zero or three), not a plan
MAX_DPH = 500.0
MAX_RUN_USD = 100_000.0
MAX_MONTH_USD = 1_000_000.0
MAX_RUN_HOURS = 24.0 * 31
# the shortest hours a run or a session may be given: a minute (1e-300 h is a typo, and a limit
# shorter than one guard round is no limit anyone meant)
MIN_HOURS = 1 / 60
MAX_SESSION_HOURS = 72.0  # a remote ComfyUI session is for generating, not for keeping


class Settings(BaseSettings):
    """Everything configurable. Build with :meth:`Settings.load`."""

    model_config = SettingsConfigDict(env_prefix="LORA_CLOUD_", extra="ignore", populate_by_name=True)

    home: Path = Field(default_factory=current_home, description="config, secrets and state folder")
    storage: str = Field("", description="gs://bucket[/prefix] or a folder; default: <home>/bucket")
    gcs_project: str | None = Field(None, description="GCP project for the storage client")
    vast_url: str = Field(VAST_URL, description="vast.ai API base URL")
    ssh_key_path: str | None = Field(None, description="private key used to reach instances")
    comfyui_loras_dir: str | None = Field(None, description="ComfyUI's models/loras: downloaded LoRAs go into "
                                                            "its lora_cloud/ folder")
    comfyui_url: str = Field("http://127.0.0.1:8188", description="the ComfyUI `lora test` queues on from a shell "
                                                                 "(inside ComfyUI, that ComfyUI itself)")
    allowed_hosts: str = Field(
        "", description="more Host names (or https:// origins) the sidebar's routes answer to, comma-separated: "
                        "for a ComfyUI reached through a reverse proxy or a LAN name")

    # Budgets are finite numbers in a sane range (NaN, inf and 1e309 are refused). 0 turns a $ limit
    # off, the same for the watchdog, the launch checks and the offer picker; hours must be above 0.
    max_dph: float = Field(2.0, ge=0, le=MAX_DPH, allow_inf_nan=False,
                           description="budget: the most $/hr one instance may cost "
                                       f"(0 = no limit; at most {MAX_DPH:g})")
    max_run_usd: float = Field(10.0, ge=0, le=MAX_RUN_USD, allow_inf_nan=False,
                               description="budget: the most $ one run may cost "
                                           f"(0 = no limit; at most {MAX_RUN_USD:g})")
    max_month_usd: float = Field(50.0, ge=0, le=MAX_MONTH_USD, allow_inf_nan=False,
                                 description="budget: the most $ per calendar month "
                                             f"(0 = no limit; at most {MAX_MONTH_USD:g})")
    max_run_hours: float = Field(6.0, ge=MIN_HOURS, le=MAX_RUN_HOURS, allow_inf_nan=False,
                                 description="budget: destroy a run's instance after this many hours "
                                             f"(at least a minute, {MIN_HOURS:.4f}; at most {MAX_RUN_HOURS:g}; "
                                             "there is no 'no limit')")

    # Preemption recovery (service/runs/recovery.py); a run can override each of these (train start).
    preempt_wait_minutes: float = Field(10.0, ge=0, le=24 * 60, allow_inf_nan=False,
                                        description="recovery: minutes to wait for a preempted instance to "
                                                    "resume (its disk holds the state) before moving the run")
    preempt_max_attempts: int = Field(5, ge=1, le=50,
                                      description="recovery: the most instances one run may use; then it fails")
    preempt_on_demand_after: int = Field(0, ge=0, le=50,
                                         description="recovery: after this many preemptions rent on-demand "
                                                     "(0 = stay interruptible)")
    preempt_checkpoint_minutes: float = Field(10.0, gt=0, le=240, allow_inf_nan=False,
                                              description="interruptible runs: an epoch (one checkpoint) takes "
                                                          "at most this long, so a preemption loses no more")

    # a bucket's cost per request is mostly the round trip, so more transfers in flight pay off
    # (benchmarks/sync.py: 16 workers were 6.3x a sequential loop at 30 ms per request)
    sync_workers: int = Field(16, ge=1, le=64, description="parallel transfers for sync")
    trainer_image: str = Field("ghcr.io/comfy-lora-cloud/trainer:0.1.0", description="Docker image of the trainer")
    inference_image: str = Field("ghcr.io/comfy-lora-cloud/inference:0.1.0",
                                 description="Docker image of the remote ComfyUI (lora-cloud comfy start)")
    ssh_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
                          description="the user SSH logs in as on a rented instance")
    session_max_hours: float = Field(4.0, ge=MIN_HOURS, le=MAX_SESSION_HOURS, allow_inf_nan=False,
                                     description="remote ComfyUI sessions: destroy the instance after this many "
                                                 "hours unless the start asks otherwise (comfy start --max-hours); "
                                                 f"at most {MAX_SESSION_HOURS:g}. The runs' max_run_hours does not "
                                                 "apply to sessions")
    comfy_remote_port: int = Field(8188, ge=1, le=65535,
                                   description="the port the remote ComfyUI listens on inside its instance "
                                               "(127.0.0.1 only; reached through the SSH tunnel)")
    rembg_model_path: str | None = Field(None, description="background-removal model (.onnx); default: rembg's folders")
    caption_model_path: str | None = Field(None, description="local Florence-2 / BLIP-2 model folder for captions")

    vast_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("vast_api_key", "LORA_CLOUD_VAST_API_KEY", "VAST_API_KEY")
    )
    gcs_service_account_json: SecretStr | None = Field(
        None, validation_alias=AliasChoices("gcs_service_account_json", "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON")
    )
    hf_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("hf_token", "LORA_CLOUD_HF_TOKEN", "HF_TOKEN")
    )
    # before webhook_url: its check reads this one (fields are validated in this order)
    webhook_allow_private: bool = Field(
        False, description="let webhook_url reach this machine or a private network (a LAN n8n or Home Assistant); "
                           "cloud metadata addresses stay refused")
    webhook_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("webhook_url", "LORA_CLOUD_WEBHOOK_URL")
    )
    # notifications (service/notify.py): run done/failed/preempted/resumed, budget 80%/100%, idle session
    webhook_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("webhook_secret", "LORA_CLOUD_WEBHOOK_SECRET"),
        description="signs each webhook body (HMAC-SHA256, header X-LoRA-Cloud-Signature)")
    webhook_format: Literal["json", "slack", "discord"] = Field(
        "json", description="webhook body: json (the stable schema), slack or discord")
    notify_toast: bool = Field(True, description="notifications as a toast in every open ComfyUI tab")
    notify_desktop: bool = Field(True, description="notifications on this machine's desktop (skipped without one)")
    notify_webhook: bool = Field(True, description="notifications to webhook_url (when it is set)")

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, v: str) -> str:
        return check_storage_url(v)

    @field_validator("vast_url")
    @classmethod
    def _check_vast_url(cls, v: str) -> str:
        return check_http_url(v, "vast_url")

    @field_validator("comfyui_url")
    @classmethod
    def _check_comfyui_url(cls, v: str) -> str:
        return check_http_url(v, "comfyui_url")

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is None or not v.get_secret_value():
            return None
        url = check_http_url(v.get_secret_value(), "webhook_url")
        # the host as written (an address, localhost, a metadata name); a name is checked again
        # after DNS, by the sender (service/notify/webhook.py), on the address it connects to
        problem = literal_host_problem(urlsplit(url).hostname or "",
                                       allow_private=info.data.get("webhook_allow_private") is True)
        if problem:
            raise ValueError(f"webhook_url refused: {problem}")
        return SecretStr(url)

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, v: str) -> str:
        return ",".join(split_host_list(v))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlFileSource(settings_cls, SECRETS_FILE),
            TomlFileSource(settings_cls, CONFIG_FILE),
        )

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> "Settings":
        """Read settings for ``home`` (default: ``LORA_CLOUD_HOME`` or the per-user folder)."""
        path = Path(home).expanduser() if home else default_home()
        with home_override(path):
            try:
                s = cls(home=path, **overrides)
            except ValidationError as exc:
                raise ConfigError(describe_invalid(exc)) from None
        for key in SECRET_KEYS:
            register_secret(s.secret(key))
        return s

    @classmethod
    def from_tables(cls, home: Path, files: Mapping[str, Mapping[str, Any]], **overrides: Any) -> "Settings":
        """Settings for ``home`` with ``files`` (file name -> its table) in place of the files on
        disk; the environment and ``overrides`` as :meth:`load`. Raises pydantic's
        ``ValidationError`` (its errors name each refused value)."""
        with home_override(home), given_files(files):
            s = cls(home=home, **overrides)
        for key in SECRET_KEYS:
            register_secret(s.secret(key))
        return s

    # ---- derived values -------------------------------------------------------------------
    @property
    def storage_url(self) -> str:
        return self.storage or str(self.home / "bucket")

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    @property
    def allowed_host_list(self) -> tuple[str, ...]:
        """``allowed_hosts`` as entries: host names, IP addresses or ``http(s)://`` origins."""
        return tuple(e for e in self.allowed_hosts.split(",") if e)

    def secret(self, key: str) -> str | None:
        value = getattr(self, key)
        return value.get_secret_value() if isinstance(value, SecretStr) else None

    def masked(self) -> dict[str, Any]:
        """Every setting, with secrets replaced by whether they are set."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_KEYS:
                out[name] = "**** (set)" if value is not None else None
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        out["storage"] = self.storage_url
        return out


def describe_invalid(exc: ValidationError) -> str:
    """A ``ValidationError`` of the settings as the one line a :class:`ConfigError` carries."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
    return f"invalid settings: {problems}"
