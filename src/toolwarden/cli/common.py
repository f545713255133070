"""Shared plumbing of the CLI commands: settings, the event loop, one-line errors."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import click

from toolwarden.config import ConfigError, Settings, load_settings
from toolwarden.startup import end_startup_gc_pause

T = TypeVar("T")

EXIT_CONFIG = 2


class CliError(click.ClickException):
    """One line on stderr, no traceback, a chosen exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        setattr(self, "exit_code", exit_code)  # noqa: B010 - ClickException declares a ClassVar

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def load_or_exit(config_path: str | None) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from exc


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    if obj is None:
        return load_or_exit(None)
    settings: Settings = obj.settings
    return settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; supervisor errors become one line and exit 1."""
    from toolwarden.client import SupervisorError

    end_startup_gc_pause()
    try:
        return asyncio.run(coro)
    except SupervisorError as exc:
        raise CliError(str(exc)) from exc
    except KeyboardInterrupt:
        raise CliError("interrupted", 130) from None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> None:
    if not rows:
        return
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=False))
    click.echo(line.rstrip())
    for row in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def is_tty() -> bool:
    return sys.stdout.isatty()
