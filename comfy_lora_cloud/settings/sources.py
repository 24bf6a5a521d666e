"""Where the settings come from besides the environment: the two files in the home, read with a
bound and parsed as TOML, and the pydantic source that hands their tables to
:class:`~.model.Settings` (or tables a caller gives instead, :func:`given_files`).

Reading only: the files are written by :mod:`.files` alone."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from ..errors import ConfigError
from .home import current_home

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILE = "config.toml"
SECRETS_FILE = "secrets.toml"
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


def read_toml(path: Path) -> dict[str, Any]:
    """The table in the settings file at ``path``; empty when there is no file."""
    raw = read_settings_file(path)
    return {} if raw is None else parse_toml(path.name, raw)


# The files' tables to use instead of reading the files (service/home/settings_files.py: a damaged
# file's last good copy); None: read the files.
_given_files: contextvars.ContextVar[Mapping[str, Mapping[str, Any]] | None] = contextvars.ContextVar(
    "lora_cloud_given_files", default=None)


@contextlib.contextmanager
def given_files(files: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    """Within the block, :class:`TomlFileSource` reads ``files`` (file name -> its table)."""
    token = _given_files.set(files)
    try:
        yield
    finally:
        _given_files.reset(token)


class TomlFileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], filename: str):
        super().__init__(settings_cls)
        self.filename = filename

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        given = _given_files.get()
        data = dict(given.get(self.filename) or {}) if given is not None else read_toml(current_home() / self.filename)
        return {k: v for k, v in data.items() if k in self.settings_cls.model_fields}
