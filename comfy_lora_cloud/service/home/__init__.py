"""This machine's home folder: the state store (:mod:`.state`, SQLite) and the settings as the
guard reads them, damaged files included (:mod:`.settings_files`)."""

from .settings_files import load_settings
from .state import OnCorrupt, REBUILD_KEY, SESSION_COLUMNS, StateStore, row_to_session, salvage

__all__ = [
    "OnCorrupt",
    "REBUILD_KEY",
    "SESSION_COLUMNS",
    "StateStore",
    "load_settings",
    "row_to_session",
    "salvage",
]
