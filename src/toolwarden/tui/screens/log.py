"""The `l` screen: a run's full log, following as it grows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, Static

from toolwarden.logfiles import LogFollower
from toolwarden.tui.loader import SupervisorAPI

FOLLOW_SECONDS = 0.5
INITIAL_BYTES = 4 * 1024 * 1024  # of each file, when the screen opens


class LogScreen(Screen[None]):
    """Reads the worker's log files when they are on this host, else the heartbeat tail."""

    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("l", "close", "Back", show=False),
        Binding("q", "close", "Back", show=False),
        Binding("f", "toggle_follow", "Follow on/off"),
        Binding("g", "top", "Top", show=False),
        Binding("G", "bottom", "Bottom", show=False),
    ]

    def __init__(
        self, run_id: str, directory: Path, supervisor: Callable[[], SupervisorAPI | None]
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.reader = LogFollower(directory, max_initial_bytes=INITIAL_BYTES)
        self.supervisor = supervisor
        self.follow = True
        self._tail_seen: list[str] = []
        self._busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Log of {self.run_id} · following", id="log-title")
        yield Log(id="log", highlight=False, max_lines=200_000)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "toolwarden"
        self.sub_title = f"log {self.run_id}"
        self.query_one(Log).focus()
        self.set_interval(FOLLOW_SECONDS, self._pump)
        self._pump()

    def _pump(self) -> None:
        if not self._busy:
            self._busy = True
            self._read()

    @work(exclusive=True, group="log", exit_on_error=False)
    async def _read(self) -> None:
        import asyncio

        try:
            if self.reader.offsets or self.reader.files():
                lines = await asyncio.to_thread(self.reader.read_lines)
            else:
                lines = await self._tail_from_heartbeat()
            if lines:
                log = self.query_one(Log)
                log.auto_scroll = self.follow
                log.write_lines(lines)
        except Exception as exc:
            self.query_one("#log-title", Static).update(Text(f"Log of {self.run_id}: {exc}"))
        finally:
            self._busy = False

    async def _tail_from_heartbeat(self) -> list[str]:
        """No log file here (the worker runs elsewhere): show what the tool last reported."""
        supervisor = self.supervisor()
        if supervisor is None:
            return []
        status = await supervisor.get_run(self.run_id).status()
        tail = (status.live.tail if status.live else None) or (
            status.last_attempt.tail if status.last_attempt else []
        )
        if not self._tail_seen:
            self.query_one("#log-title", Static).update(
                f"Log of {self.run_id} · no log file on this host; last lines by heartbeat"
            )
        # Append only the lines after the overlap with what is already shown.
        new = tail
        for cut in range(len(tail), 0, -1):
            if self._tail_seen[-cut:] == tail[:cut]:
                new = tail[cut:]
                break
        self._tail_seen = (self._tail_seen + new)[-1000:]
        return new

    def action_close(self) -> None:
        self.dismiss(None)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        self.query_one(Log).auto_scroll = self.follow
        state = "following" if self.follow else "paused"
        self.query_one("#log-title", Static).update(f"Log of {self.run_id} · {state}")
        if self.follow:
            self.query_one(Log).scroll_end(animate=False)

    def action_top(self) -> None:
        self.query_one(Log).scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.query_one(Log).scroll_end(animate=False)
