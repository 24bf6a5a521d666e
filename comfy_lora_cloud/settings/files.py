"""The one module that writes the settings files: ``config.toml`` and ``secrets.toml`` in the
home (:func:`set_value`, which repairs a damaged file by setting it aside) and their last good
copies in ``<home>/.last-good/`` (:class:`LastGood`, :func:`remember_if_clean`).

Secrets go to ``secrets.toml`` with mode 0600, never to ``config.toml``. Every write is atomic:
a private temporary file renamed over the old one, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from ..errors import ConfigError
from .model import SECRET_KEYS, Settings, describe_invalid
from .sources import CONFIG_FILE, SECRETS_FILE, parse_toml, read_settings_file, read_toml

log = logging.getLogger(__name__)


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
        data = read_toml(path)
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
