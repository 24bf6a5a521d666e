"""Settings that survive a damaged home: the last good copy of each settings file, kept on disk
beside it, and a load that falls back on that copy.

Whenever a settings file loads cleanly, its bytes are copied to ``<home>/.last-good/<name>``
(written atomically; the folder 0700 and every copy 0600, since the secrets copy holds the keys).
A process that meets a damaged file (a fresh ``lora-cloud instances reconcile``, cron, a restarted
ComfyUI) falls back, for that file only:

* a file that cannot be read at all (not UTF-8, not TOML, too large, a folder in its place): its
  last good copy, else nothing from it (the built-in defaults of its settings);
* single values that are refused (``max_month_usd = -5``, ``webhook_url = "ftp://x"``): the file's
  other values, and for each refused one its last good value, else its built-in default;
* a ``LORA_CLOUD_*`` environment value that is refused gives way to what the files (or the
  defaults) say. Values a caller passes in (``overrides``) are never second-guessed.

Each fallback is one :class:`SettingsProblem` naming the file or variable, what is wrong and what
is in force instead (a secret's value is never shown). The guard reports them every round, and
``lora-cloud instances reconcile`` names them and exits 9. Without a readable config.toml, a last
good copy of it or a storage setting in the environment, the storage the guard should judge by is
unknown: :attr:`LoadedSettings.storage_unknown` says so, and the guard then treats the bucket as
unreadable (nothing destroyed on that doubt; the budgets hold).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from ...errors import ConfigError, redact, register_secret
from ...settings import (CONFIG_FILE, SECRET_KEYS, SECRETS_FILE, LastGood, Settings, default_home,
                        describe_invalid, parse_toml, read_settings_file)

log = logging.getLogger(__name__)

FILES = (SECRETS_FILE, CONFIG_FILE)  # the files' order of precedence: secrets first
ENVIRONMENT = "environment"


# ---- the load -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingsProblem:
    source: str  # "config.toml", "secrets.toml" or "environment"
    message: str  # what is wrong and what is in force instead


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    problems: tuple[SettingsProblem, ...] = ()
    storage_unknown: str | None = None  # why the storage setting in force may not be the user's

    @property
    def problem(self) -> str | None:
        """Every problem in one line (the guard's ``settings`` problem), None when clean."""
        return "; ".join(p.message for p in self.problems) or None


@dataclass
class _File:
    name: str
    table: dict[str, Any] | None  # None: the file cannot be read
    error: str = ""
    raw: bytes | None = None
    last_good: dict[str, Any] | None = None  # the last good copy's table, None: no usable copy
    refused: dict[str, str] = field(default_factory=dict)  # setting -> why (the settings in force)


def load_settings(home: str | Path | None = None, *, fall_back: bool = True, **overrides: Any) -> LoadedSettings:
    """The settings of ``home``; every file that loads cleanly becomes its last good copy.

    ``fall_back=False``: a damaged file or environment value raises the :class:`ConfigError`
    that :meth:`Settings.load` raises (the commands that do not guard refuse a damaged home).
    A bad ``overrides`` value always raises."""
    path = Path(home).expanduser() if home else default_home()
    last_good = LastGood(path)
    files = {name: _read(path, name, last_good) for name in FILES}
    strict_error = next((f.error for f in files.values() if f.table is None), None)
    settings, env_refused, strict_error = _settle(path, files, overrides, strict_error)
    for f in files.values():
        if f.table is not None and not f.refused:
            _remember(last_good, f.name, f.raw)
    if strict_error is not None and not fall_back:
        raise ConfigError(strict_error)
    problems = [*(_file_problem(f, last_good, settings) for f in files.values()),
                *(SettingsProblem(ENVIRONMENT, f"environment {var}: {why}; in force: "
                                               f"{_in_force(settings, name)}")
                  for name, (var, why) in env_refused.items())]
    found = tuple(p for p in problems if p is not None)
    for p in found:
        log.warning("settings: %s", p.message)
    return LoadedSettings(settings, found, _storage_unknown(files[CONFIG_FILE], overrides))


def _read(home: Path, name: str, last_good: LastGood) -> _File:
    try:
        raw = read_settings_file(home / name)
        table = {} if raw is None else parse_toml(name, raw)
    except ConfigError as exc:
        f = _File(name, None, exc.message)
    else:
        f = _File(name, _known(table), raw=raw)
    copy = last_good.read(name)
    if copy is not None:
        with contextlib.suppress(ConfigError):
            f.last_good = _known(parse_toml(name, copy))
    if name == SECRETS_FILE:  # a refused secret is still a secret: mask it in every message
        for table in (f.table, f.last_good):
            for value in (table or {}).values():
                if isinstance(value, str):
                    register_secret(value)
    return f


def _known(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k in Settings.model_fields and k != "home"}


def _settle(home: Path, files: dict[str, _File], overrides: dict[str, Any],
            strict_error: str | None) -> tuple[Settings, dict[str, tuple[str, str]], str | None]:
    """Build the settings, taking back each refused value until they validate. Returns them, the
    refused environment values (setting -> (variable, why)) and the error a strict load raises."""
    tables = {name: dict(f.table if f.table is not None else (f.last_good or {})) for name, f in files.items()}
    env_refused: dict[str, tuple[str, str]] = {}
    for _ in range(4 * len(Settings.model_fields)):  # each round takes back at least one value
        init = {**{name: _below_env(name, tables) for name in env_refused}, **overrides}
        try:
            return Settings.from_tables(home, tables, **init), env_refused, strict_error
        except ValidationError as exc:
            strict_error = strict_error or describe_invalid(exc)
            progressed = False
            for err in exc.errors():
                name = _field_of(err["loc"][0] if err["loc"] else "")
                if name is None or name in overrides:
                    raise ConfigError(describe_invalid(exc)) from None
                why = redact(str(err["msg"]))
                var = _env_var(name)
                if var is not None and name not in env_refused:
                    env_refused[name] = (var, why)
                    progressed = True
                    continue
                source = next((n for n in FILES if name in tables[n]), None)
                if source is None:
                    raise ConfigError(describe_invalid(exc)) from None
                progressed |= _take_back(files[source], tables[source], name, why)
            if not progressed:
                raise ConfigError(describe_invalid(exc)) from None
    raise ConfigError(strict_error or "invalid settings")  # pragma: no cover - bounded above


def _take_back(f: _File, table: dict[str, Any], name: str, why: str) -> bool:
    """Replace a refused value of ``f`` with its last good one, or drop it (the default holds)."""
    good = (f.last_good or {}).get(name, _MISSING)
    f.refused.setdefault(name, why)
    if good is not _MISSING and table.get(name, _MISSING) != good and f.table is not None:
        table[name] = good
        return True
    if name in table:
        del table[name]
        return True
    return False


_MISSING = object()


def _below_env(name: str, tables: Mapping[str, Mapping[str, Any]]) -> Any:
    """What the files (else the built-in default) say for ``name``: in force when the
    environment's value is refused."""
    for file in FILES:
        if name in tables[file]:
            return tables[file][name]
    info: FieldInfo = Settings.model_fields[name]
    return info.get_default(call_default_factory=True)


def _field_of(loc: Any) -> str | None:
    key = str(loc).lower()
    for name, info in Settings.model_fields.items():
        if key == name or key in _aliases(info):
            return name
    return None


def _aliases(info: FieldInfo) -> set[str]:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices is not None:
        return {str(c).lower() for c in choices}
    return {str(alias).lower()} if isinstance(alias, str) else set()


def _env_var(name: str) -> str | None:
    """The environment variable that gives ``name`` its value, when one does."""
    prefix = str(Settings.model_config.get("env_prefix") or "")
    names = _aliases(Settings.model_fields[name]) or {f"{prefix}{name}".lower()}
    for var in os.environ:
        if var.lower() in names:
            return var
    return None


def _file_problem(f: _File, last_good: LastGood, settings: Settings) -> SettingsProblem | None:
    if f.table is None:
        if f.last_good is not None:
            instead = f"its last good copy {last_good.path(f.name)} (saved {last_good.saved_at(f.name)})"
        else:
            instead = "no last good copy of it exists, so the built-in defaults of its settings"
        refused = "".join(f"; in that copy, {k} refused ({why}): {_in_force(settings, k)}"
                          for k, why in f.refused.items())
        return SettingsProblem(f.name, f"{f.error}; in force: {instead}{refused}")
    if not f.refused:
        return None
    parts = []
    for name, why in f.refused.items():
        good = f.last_good is not None and name in f.last_good
        parts.append(f"{name} refused ({why}); in force: {_in_force(settings, name)}"
                     f"{' (its last good value)' if good else ' (the built-in default)'}")
    return SettingsProblem(f.name, f"{f.name}: " + "; ".join(parts))


def _in_force(settings: Settings, name: str) -> str:
    if name in SECRET_KEYS:
        return "a value (not shown)" if settings.secret(name) else "no value"
    value = getattr(settings, name)
    return f"{name} = {value!r}"


def _remember(last_good: LastGood, name: str, raw: bytes | None) -> None:
    try:
        last_good.remember(name, raw)
    except OSError as exc:  # a read-only home: the settings still load, the copy waits
        log.warning("could not keep the last good copy of %s: %s", name, exc.strerror or exc)


def _storage_unknown(config: _File, overrides: Mapping[str, Any]) -> str | None:
    if config.table is not None or config.last_good is not None:
        return None
    if "storage" in overrides or _env_var("storage") is not None:
        return None
    return (f"the storage setting is unknown ({config.error}, and no last good copy of it exists): no run's "
            "bucket can vouch for it, so nothing is destroyed as unowned; the budgets still hold")
