"""Command groups whose nouns are imported when they are used.

``lora-cloud --help`` lists every noun from a table (name -> module below ``cli/``, one-line
help) without importing the modules or building their click commands, which together were half
of the CLI's start; ``lora-cloud dataset list`` imports ``cli/dataset.py`` and nothing of the
other nouns. The table in ``cli/main.py`` is the one home of a noun's name, module and help.
"""

from __future__ import annotations

import importlib
import inspect
from difflib import get_close_matches
from typing import Any

from typer.core import TyperCommand, TyperGroup

try:  # a newer typer carries its own click
    from typer import _click
except ImportError:  # pragma: no cover - older typer: click itself
    import click as _click

#: a noun: (module below comfy_lora_cloud.cli, one-line help)
Noun = tuple[str, str]


def lazy_group(nouns: dict[str, Noun], *, rich_markup_mode: Any = None, pretty_exceptions_short: bool = True,
               suggest_commands: bool = True) -> type[TyperGroup]:
    """A :class:`TyperGroup` class (for ``typer.Typer(cls=...)``) that serves ``nouns`` lazily.
    The keyword settings are the root app's, which typer would hand to each ``add_typer``
    subgroup."""

    class LazyGroup(TyperGroup):
        _nouns = nouns
        _listing = False  # formatting the root help: placeholders, no imports

        def list_commands(self, ctx: Any) -> list[str]:
            eager = super().list_commands(ctx)
            return [*eager, *(n for n in self._nouns if n not in eager)]

        def get_command(self, ctx: Any, name: str) -> Any:
            cmd = super().get_command(ctx, name)
            if cmd is not None or name not in self._nouns:
                return cmd
            module, help_text = self._nouns[name]
            if self._listing:
                return TyperCommand(name=name, help=help_text)
            cmd = _load(name, module, help_text, rich_markup_mode=rich_markup_mode,
                        pretty_exceptions_short=pretty_exceptions_short, suggest_commands=suggest_commands)
            self.commands[name] = cmd
            return cmd

        def resolve_command(self, ctx: Any, args: list[str]) -> Any:
            try:
                return super().resolve_command(ctx, args)
            except _click.exceptions.UsageError as exc:  # typer suggests from the loaded ones only
                unloaded = [n for n in self._nouns if n not in self.commands]
                matches = get_close_matches(args[0], unloaded) if args and unloaded else []
                if getattr(self, "suggest_commands", True) and matches and "Did you mean" not in exc.message:
                    exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
                raise

        def format_commands(self, ctx: Any, formatter: Any) -> None:
            self._listing = True
            try:
                super().format_commands(ctx, formatter)
            finally:
                self._listing = False

    return LazyGroup


def _load(name: str, module: str, help_text: str, **settings: Any) -> Any:
    """The noun's click group, built as ``app.add_typer(module.app, name=name, help=help_text)``
    would have built it."""
    from typer.main import get_group_from_info
    from typer.models import TyperInfo

    sub = importlib.import_module(f"{__package__}.{module}").app
    accepted = inspect.signature(get_group_from_info).parameters  # older typer: no suggest_commands
    return get_group_from_info(TyperInfo(sub, name=name, help=help_text),
                               **{k: v for k, v in settings.items() if k in accepted})


__all__ = ["Noun", "lazy_group"]
