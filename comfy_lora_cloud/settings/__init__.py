"""One settings object: environment ``LORA_CLOUD_*`` first, then the secrets file, then
``config.toml`` in the home folder, then defaults.

The home folder is ``LORA_CLOUD_HOME`` or a per-user config folder. Secrets (API keys, tokens,
service-account JSON, webhook URL) live in ``<home>/secrets.toml`` with mode 0600, never in
``config.toml`` and never in ComfyUI's ``user/`` folder. They are ``SecretStr`` everywhere, so a
``repr``, a log line or a JSON dump shows ``**********``; :meth:`Settings.masked` is what
``lora-cloud config show`` prints.

By responsibility:

    home.py       which folder is the home (``default_home``, ``current_home``, ``home_override``)
    values.py     strict checks of typed values (storage URL, http URLs, allowed hosts)
    sources.py    reading the two files (bounded, TOML) and feeding them to the settings
    model.py      :class:`Settings`, its fields and their checks, the hard maxima
    files.py      the one writer of the settings files and their last good copies
    redaction.py  the log filter that masks secrets

The rest of the pack imports these names from here (``from ..settings import Settings``).
"""

from .files import LAST_GOOD_DIR, LastGood, remember_if_clean, set_value
from .home import current_home, default_home, home_override
from .model import (
    MAX_DPH, MAX_MONTH_USD, MAX_RUN_HOURS, MAX_RUN_USD, MAX_SESSION_HOURS, MIN_HOURS, SECRET_KEYS, VAST_URL,
    Settings, describe_invalid,
)
from .redaction import RedactingFilter, install_log_redaction
from .sources import CONFIG_FILE, MAX_SETTINGS_FILE_BYTES, SECRETS_FILE, parse_toml, read_settings_file
from .values import check_http_url, check_storage_url, split_host_list

__all__ = [
    "CONFIG_FILE", "LAST_GOOD_DIR", "MAX_DPH", "MAX_MONTH_USD", "MAX_RUN_HOURS", "MAX_RUN_USD", "MAX_SESSION_HOURS",
    "MAX_SETTINGS_FILE_BYTES", "MIN_HOURS", "SECRETS_FILE", "SECRET_KEYS", "VAST_URL", "LastGood", "RedactingFilter",
    "Settings", "check_http_url", "check_storage_url", "current_home", "default_home", "describe_invalid",
    "home_override", "install_log_redaction", "parse_toml", "read_settings_file", "remember_if_clean", "set_value",
    "split_host_list",
]
