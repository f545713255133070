"""Errors told in one line: what every face (CLI, TUI, HTTP, logs) shows a person.

Light on purpose (pydantic is imported only for typing): the tool-side commands use it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

MAX_LINE = 300


def one_line(exc: BaseException, *, limit: int = MAX_LINE) -> str:
    """The first line of `exc`'s message, whitespace collapsed, or its type's name if it has none.

    A database driver's own error (SQLAlchemy's `.orig`) is told rather than its wrapper, whose
    message repeats the SQL statement.
    """
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
    return first[:limit]


def validation_line(error: ValidationError) -> str:
    """A pydantic validation error as `where: what`, naming only the first problem."""
    problems = error.errors()
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (f"{where}: {message}" if where else message) + more
