"""Pure formatting for the TUI's cells and panes (no textual here, so it is easy to test)."""

from __future__ import annotations

import functools
from datetime import datetime

from rich.text import Text

from toolwarden.durations import human_seconds
from toolwarden.models import RunState

STATE_STYLES: dict[RunState, str] = {
    RunState.PENDING: "dim",
    RunState.RUNNING: "bold cyan",
    RunState.WAITING_APPROVAL: "bold yellow",
    RunState.RETRYING: "yellow",
    RunState.SUCCEEDED: "green",
    RunState.FAILED: "bold red",
    RunState.KILLED: "red",
    RunState.HUNG: "red",
    RunState.TIMED_OUT: "red",
    RunState.CANCELLED: "magenta",
    RunState.FAILED_TO_START: "bold red",
    RunState.REJECTED: "magenta",
    RunState.EXPIRED: "magenta",
}


@functools.lru_cache(maxsize=64)
def state_text(state: RunState | None, fallback: str = "unknown") -> Text:
    """Shared instances (never mutated): a thousand rows build no new Text per tick."""
    if state is None:
        return Text(fallback, style="dim")
    return Text(state.value.replace("_", " "), style=STATE_STYLES.get(state, ""))


def ago(then: datetime | None, now: datetime) -> str:
    """`42s`, `3m5s`, `1d4h` since `then`, or `-`."""
    if then is None:
        return "-"
    return human_seconds(max((now - then).total_seconds(), 0.0))


def coarse_ago(then: datetime | None, now: datetime) -> str:
    """Like `ago` but minute-grained past a minute, so long lists do not churn every second."""
    if then is None:
        return "-"
    seconds = max((now - then).total_seconds(), 0.0)
    if 60 <= seconds < 3600:
        return f"{int(seconds // 60)}m"
    return human_seconds(seconds)


def countdown(deadline: datetime, now: datetime) -> Text:
    """Time left before `deadline`, coloured as it runs out."""
    left = (deadline - now).total_seconds()
    if left <= 0:
        return styled("expiring", "bold red")
    return styled(human_seconds(left), "bold red" if left < 60 else "yellow" if left < 600 else "")


@functools.lru_cache(maxsize=4096)
def styled(text: str, style: str) -> Text:
    """Shared instances (never mutated), like `state_text`: equal cells are the same object."""
    return Text(text, style=style)


def progress_bar(progress: float | None, width: int = 10) -> str:
    """`[#####     ]  50%`, or `-` when the tool reports none."""
    if progress is None:
        return "-"
    fraction = min(max(progress, 0.0), 1.0)
    filled = round(fraction * width)
    return f"{'█' * filled}{'░' * (width - filled)} {fraction * 100:3.0f}%"


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
