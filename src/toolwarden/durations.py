"""Durations as people write and read them: `30s`, `10m`, `1h30m`, `2d`, `250ms`.

Standard library only: `toolwarden ask --timeout` parses with it inside supervised tools, where
start-up time counts, and the settings parse with it too.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(text: str) -> float:
    """Seconds from `30s`, `10m`, `2h`, `1d`, `1h30m`, `250ms` or a bare number of seconds."""
    value = text.strip().lower()
    if _NUMBER.fullmatch(value):
        return float(value)
    if value and _PART.sub("", value).strip() == "":
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(value))
    raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 10m, 2h, 1d)")


def human_seconds(seconds: float) -> str:
    """`42s`, `3m5s`, `2h10m`, `1d4h`; negative for the past."""
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    if s >= 86400:
        return f"{sign}{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h{(s % 3600) // 60}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60}s"
    return f"{sign}{s}s"
