"""What every service shares, typed: the settings, the storage, the state store, the clock, the
event sink and the providers. :class:`~.app.App` is the one implementation; a service is given
this and, separately, each neighbour it calls, so its constructor says what it depends on.

It holds parts that change under a running process (settings re-read when their files change,
storage rebuilt when the storage settings change, a damaged state store set aside), which is why
services read them through it on each use instead of keeping copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncContextManager, Callable, Protocol

if TYPE_CHECKING:
    from ..providers.base import Provider
    from ..settings import Settings
    from ..storage import Storage
    from .guard import GuardMemory
    from .home import StateStore

Clock = Callable[[], float]
# A fresh provider per use: the vast.ai client holds an httpx.AsyncClient, which is bound to the
# loop it first ran on, and one App serves several loops (ComfyUI's server loop, each prompt's
# loop, the pack's own loop).
ProviderFactory = Callable[[], AsyncContextManager["Provider"]]


class SettingsFiles(Protocol):
    """Where the settings come from: told when this process wrote them."""

    home: Path

    def invalidate(self) -> None: ...


class Core(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def storage(self) -> Storage: ...

    @property
    def state(self) -> StateStore: ...

    @property
    def loras_dir(self) -> Path: ...

    @property
    def settings_problem(self) -> str | None: ...

    source: SettingsFiles
    clock: Clock
    python: str | None  # the trainer's interpreter for local runs (tests); None: this one
    guard_memory: GuardMemory

    def emit(self, event: str, data: dict[str, Any]) -> None: ...

    def sink(self, event: str, data: dict[str, Any]) -> None: ...

    def provider(self, name: str = "vast", *, vram_gb: float = 24.0) -> ProviderFactory: ...

    def has_vast_key(self) -> bool: ...
