"""One settings object: environment ``LORA_CLOUD_*`` first, then the secrets file, then
``config.toml`` in the home folder, then defaults.

The home folder is ``LORA_CLOUD_HOME`` or a per-user config folder. Secrets (API keys, tokens,
service-account JSON, webhook URL) live in ``<home>/secrets.toml`` with mode 0600, never in
``config.toml`` and never in ComfyUI's ``user/`` folder. They are ``SecretStr`` everywhere, so a
``repr``, a log line or a JSON dump shows ``**********``; :meth:`Settings.masked` is what
``lora-cloud config show`` prints.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import ipaddress
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit
from typing import Any, Iterator, Literal, Mapping

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .addresses import literal_host_problem
from .errors import ConfigError, register_secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

log = logging.getLogger(__name__)

VAST_URL = "https://console.vast.ai"  # vast.ai's API, for the controller and the rented GPU alike
CONFIG_FILE = "config.toml"
SECRETS_FILE = "secrets.toml"
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

_home_override: contextvars.ContextVar[Path | None] = contextvars.ContextVar("lora_cloud_home", default=None)


def default_home() -> Path:
    """The per-user config folder (``LORA_CLOUD_HOME`` wins)."""
    env = os.environ.get("LORA_CLOUD_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "lora-cloud"


def current_home() -> Path:
    return _home_override.get() or default_home()


MAX_SETTINGS_FILE_BYTES = 1 << 20  # a settings file is a few hundred bytes; more is not one


def parse_toml(name: str, raw: bytes) -> dict[str, Any]:
    """The table in a settings file's bytes; a :class:`ConfigError` naming the file when they are
    not UTF-8 TOML (the message never quotes the file: a secrets file holds keys)."""
    if len(raw) > MAX_SETTINGS_FILE_BYTES:
        raise ConfigError(f"cannot read {name}: larger than {MAX_SETTINGS_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {name}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {name}: {exc}") from None


def read_settings_file(path: Path) -> bytes | None:
    """A settings file's bytes (at most one byte past the limit), None when there is none."""
    if not path.exists():
        return None
    if not path.is_file():
        raise ConfigError(f"cannot read {path.name}: not a file")
    try:
        with path.open("rb") as f:
            return f.read(MAX_SETTINGS_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path.name}: {exc.strerror or exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    raw = read_settings_file(path)
    return {} if raw is None else parse_toml(path.name, raw)


# The files' tables to use instead of reading the files (service/home/settings_files.py: a damaged
# file's last good copy); None: read the files.
_given_files: contextvars.ContextVar[Mapping[str, Mapping[str, Any]] | None] = contextvars.ContextVar(
    "lora_cloud_given_files", default=None)


class _TomlFileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], filename: str):
        super().__init__(settings_cls)
        self.filename = filename

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        given = _given_files.get()
        data = dict(given.get(self.filename) or {}) if given is not None else _read_toml(current_home() / self.filename)
        return {k: v for k, v in data.items() if k in self.settings_cls.model_fields}


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
            _TomlFileSource(settings_cls, SECRETS_FILE),
            _TomlFileSource(settings_cls, CONFIG_FILE),
        )

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> "Settings":
        """Read settings for ``home`` (default: ``LORA_CLOUD_HOME`` or the per-user folder)."""
        path = Path(home).expanduser() if home else default_home()
        token = _home_override.set(path)
        try:
            s = cls(home=path, **overrides)
        except ValidationError as exc:
            raise ConfigError(describe_invalid(exc)) from None
        finally:
            _home_override.reset(token)
        for key in SECRET_KEYS:
            register_secret(s.secret(key))
        return s

    @classmethod
    def from_tables(cls, home: Path, files: Mapping[str, Mapping[str, Any]], **overrides: Any) -> "Settings":
        """Settings for ``home`` with ``files`` (file name -> its table) in place of the files on
        disk; the environment and ``overrides`` as :meth:`load`. Raises pydantic's
        ``ValidationError`` (its errors name each refused value)."""
        home_token, files_token = _home_override.set(home), _given_files.set(files)
        try:
            s = cls(home=home, **overrides)
        finally:
            _given_files.reset(files_token)
            _home_override.reset(home_token)
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


# ---- strict parsing of typed values ------------------------------------------------------------
# GCS bucket names: 3-63 characters (or up to 222 in dot-separated parts of at most 63), lowercase
# letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_HOST_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_storage_url(value: str) -> str:
    """``gs://bucket[/prefix]`` or an absolute (or ``~``) local folder; anything else is refused.

    The prefix may not hold ``..``, ``.`` or empty parts: a prefix is where the pack writes, and
    ``gs://b/../../x`` must not quietly mean some other place.
    """
    v = (value or "").strip()
    if not v:
        return ""
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("storage must not contain control characters")
    scheme = v.split("://", 1)[0].lower() if "://" in v else ""
    if scheme and scheme != "gs":
        raise ValueError(f"storage {scheme}:// is not supported: use gs://bucket[/prefix] (Google Cloud Storage) "
                         "or an absolute folder path")
    if scheme == "gs":
        bucket, _, prefix = v[5:].partition("/")
        if not bucket:
            raise ValueError("gs:// URL needs a bucket name, e.g. gs://my-bucket/lora")
        parts = bucket.split(".")
        if (not _BUCKET_RE.match(bucket) or (len(bucket) > 63 and "." not in bucket)
                or any(not p or len(p) > 63 for p in parts) or bucket.startswith("goog") or "google" in bucket
                or _is_ip(bucket)):
            raise ValueError(f"{bucket!r} is not a valid GCS bucket name (3-63 lowercase letters, digits, "
                             "'-', '_' or '.', starting and ending with a letter or digit)")
        prefix = prefix.rstrip("/")
        if prefix:
            segments = prefix.split("/")
            if any(s in ("", ".", "..") for s in segments) or "\\" in prefix:
                raise ValueError(f"the prefix of {v!r} must not contain '..', '.', '\\' or empty parts")
        return f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
    if not (v.startswith("~") or PurePosixPath(v).is_absolute() or PureWindowsPath(v).is_absolute()):
        raise ValueError(f"storage {v!r} must be gs://bucket[/prefix] or an absolute folder path (or ~/...)")
    return v


def check_http_url(value: str, name: str) -> str:
    """An ``http://`` or ``https://`` URL with a host: nothing a browser or a client could run."""
    v = (value or "").strip()
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"{name} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host")
    if any(c.isspace() or ord(c) < 32 for c in v) or parts.username or parts.password:
        raise ValueError(f"{name} must not contain spaces, control characters or a user:password part")
    return v.rstrip("/")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def split_host_list(value: str) -> list[str]:
    """``allowed_hosts`` entries, checked and normalized (lowercase, no trailing dot).

    An entry is a host name (``comfy.lan``), an IP address (``192.168.1.5``, ``[fe80::1]``) or an
    origin (``https://comfy.example.com[:port]``). No wildcards: a Host rule with a ``*`` is no rule.
    """
    out: list[str] = []
    for raw in re.split(r"[,\s]+", (value or "").strip()):
        entry = raw.strip().lower()
        if not entry:
            continue
        if "://" in entry:
            try:
                parts = urlsplit(entry)
                port = parts.port
            except ValueError:
                raise ValueError(f"allowed_hosts entry {raw!r} is not a valid origin") from None
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                    or parts.query or parts.fragment or parts.username or parts.password:
                raise ValueError(f"allowed_hosts entry {raw!r} must be an origin such as https://comfy.example.com")
            host = parts.hostname.rstrip(".")
            if not (_is_ip(host) or _is_host_name(host)):
                raise ValueError(f"allowed_hosts entry {raw!r} does not name a valid host")
            shown = f"[{host}]" if ":" in host else host
            out.append(f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else ""))
            continue
        host = entry.rstrip(".")
        if _is_ip(host):
            out.append(host.strip("[]"))
        elif _is_host_name(host):
            out.append(host)
        else:
            raise ValueError(f"allowed_hosts entry {raw!r} is not a host name, an IP address or an origin "
                             "(wildcards are not allowed)")
    return out


def _is_host_name(host: str) -> bool:
    labels = host.split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL_RE.match(label) for label in labels)


def _write_toml_private(path: Path, data: dict[str, Any], mode: int) -> None:
    """Write ``data`` atomically; the file is created with ``mode`` and never widened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(data, f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ---- the last good copies -----------------------------------------------------------------------
LAST_GOOD_DIR = ".last-good"


class LastGood:
    """``<home>/.last-good/``: each settings file as it was when it last loaded cleanly."""

    _write_lock = threading.Lock()

    def __init__(self, home: Path):
        self.folder = home / LAST_GOOD_DIR

    def path(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> bytes | None:
        """The copy's bytes; None when there is none or it cannot be read."""
        try:
            return read_settings_file(self.path(name))
        except ConfigError:
            return None

    def saved_at(self, name: str) -> str:
        try:
            when = self.path(name).stat().st_mtime
        except OSError:
            return "an unknown time"
        return dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def remember(self, name: str, raw: bytes | None) -> None:
        """Keep ``raw`` as the last good ``name`` (None: the file is gone, so is its copy). Written
        to a private temporary file, flushed, then renamed over the copy: a reader sees the old
        copy or the new one, never a part."""
        target = self.path(name)
        if raw is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return
        if self.read(name) == raw:
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.folder, 0o700)
        tmp = target.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._write_lock:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(raw)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


def remember_if_clean(home: Path) -> None:
    """After a settings file was written: keep both files as their last good copies when they load
    cleanly together (service/home/settings_files.py judges each file on its own at every load)."""
    try:
        raws = {name: read_settings_file(home / name) for name in (SECRETS_FILE, CONFIG_FILE)}
        tables = {name: parse_toml(name, raw) if raw is not None else {} for name, raw in raws.items()}
        Settings.from_tables(home, tables)
    except (ConfigError, ValidationError):
        return
    last_good = LastGood(home)
    for name, raw in raws.items():
        try:
            last_good.remember(name, raw)
        except OSError as exc:
            log.warning("could not keep the last good copy of %s: %s", name, exc.strerror or exc)


def set_value(home: Path, key: str, value: str | None) -> bool:
    """Persist one setting (``None`` removes it). Returns True when ``key`` is a secret.

    Secrets go to ``secrets.toml`` (0600); the rest to ``config.toml``. The value is validated
    first, on its own, so a bad value never reaches the file and a broken value elsewhere does
    not stop this one. This is how a damaged file is repaired: one that cannot be read at all is
    moved aside (``<name>.damaged-<time>``, kept for the user) and the setting is written into
    its last good copy (else into an empty file).
    """
    key = key.strip().lower().replace("-", "_")
    if key == "home" or key not in Settings.model_fields:
        known = ", ".join(sorted(k for k in Settings.model_fields if k != "home"))
        raise ConfigError(f"unknown setting {key!r}; known: {known}")
    is_secret = key in SECRET_KEYS
    if value is not None:
        _validate_alone(home, key, value)
    filename, mode = (SECRETS_FILE, 0o600) if is_secret else (CONFIG_FILE, 0o644)
    path = home / filename
    try:
        data = _read_toml(path)
    except ConfigError:
        data = _set_damaged_aside(home, path)
    if value is None:
        data.pop(key, None)
    else:
        field = Settings.model_fields[key]
        ann = field.annotation
        if ann is bool:
            data[key] = _validate_alone(home, key, value)  # "off", "0", "false"...
        else:
            data[key] = float(value) if ann is float else int(value) if ann is int else value
    _write_toml_private(path, data, mode)
    remember_if_clean(home)
    return is_secret


def _validate_alone(home: Path, key: str, value: str) -> Any:
    """``value`` as ``key`` would hold it, checked with nothing else from the files (the other
    values are theirs to be right or wrong); a :class:`ConfigError` naming what is wrong."""
    try:
        return getattr(Settings.from_tables(home, {}, **{key: value}), key)
    except ValidationError as exc:
        raise ConfigError(describe_invalid(exc)) from None


def _set_damaged_aside(home: Path, path: Path) -> dict[str, Any]:
    """Move a settings file that cannot be read aside (never deleted: it may hold the only copy of
    a key) and return the table of its last good copy to write the new value into."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        raise ConfigError(f"cannot repair {path.name}: it cannot be read and cannot be moved aside "
                          f"({exc.strerror or exc})") from None
    if path.name == SECRETS_FILE:
        with contextlib.suppress(OSError):
            os.chmod(aside, 0o600)
    log.warning("%s could not be read; moved aside to %s and rewritten from its last good copy",
                path.name, aside.name)
    copy = LastGood(home).read(path.name)
    try:
        return parse_toml(path.name, copy) if copy is not None else {}
    except ConfigError:
        return {}


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets and key-like strings in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from .errors import redact

        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger_name: str = "comfy_lora_cloud") -> None:
    lg = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactingFilter) for f in lg.filters):
        lg.addFilter(RedactingFilter())
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


@contextlib.contextmanager
def home_override(path: Path) -> Iterator[None]:
    token = _home_override.set(path)
    try:
        yield
    finally:
        _home_override.reset(token)
