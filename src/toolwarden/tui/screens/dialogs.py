"""Small dialogs: cancel a run, filter the runs panel, the Web UI address."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from toolwarden.models import RunState
from toolwarden.tui.loader import RunFilter
from toolwarden.tui.widgets.fields import TextField


class CancelDialog(ModalScreen[str | None]):
    """Confirm cancelling a run; returns the (possibly empty) reason, or None to back out."""

    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, run_id: str, tool_name: str) -> None:
        super().__init__(classes="dialog")
        self.run_id = run_id
        self.tool_name = tool_name

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="reject"):
            yield Label(f"Cancel run {self.run_id}?", id="dialog-title")
            yield Static(
                Text.assemble(
                    ("tool ", "dim"), self.tool_name,
                    "\nIts tool is stopped (SIGTERM, then SIGKILL after the grace period).",
                ),
            )
            yield Label("Reason (optional)")
            yield TextField(placeholder="why", id="reason")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel run", id="confirm", variant="error")
                yield Button("Back", id="back")
            yield Static("enter confirms · escape backs out", id="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(self.query_one("#reason", Input).value.strip())

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss(None)


ALL = "__all__"


class FilterDialog(ModalScreen[RunFilter | None]):
    """Filter the runs panel by state and tool; enter applies, escape keeps the old filter."""

    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, current: RunFilter, tools: list[str]) -> None:
        super().__init__(classes="dialog")
        self.current = current
        self.tools = tools

    def compose(self) -> ComposeResult:
        states = [(s.value.replace("_", " "), s.value) for s in RunState]
        with Vertical(id="dialog"):
            yield Label("Filter runs", id="dialog-title")
            yield Label("State")
            yield Select(
                [("any state", ALL), *states],
                value=self.current.state.value if self.current.state else ALL,
                allow_blank=False,
                id="state",
            )
            yield Label(Text("Tool" + (f" (seen: {', '.join(self.tools[:6])})" if self.tools else "")))
            yield TextField(value=self.current.tool or "", placeholder="any tool", id="tool")
            with Horizontal(id="dialog-buttons"):
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Clear", id="clear")
                yield Button("Back", id="back")
            yield Static("enter applies · escape backs out", id="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#tool", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        state = self.query_one("#state", Select).value
        tool = self.query_one("#tool", Input).value.strip() or None
        self.dismiss(
            RunFilter(state=RunState(state) if isinstance(state, str) and state != ALL else None,
                      tool=tool)
        )

    @on(Button.Pressed, "#clear")
    def _clear(self) -> None:
        self.dismiss(RunFilter())

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss(None)


class WebUIDialog(ModalScreen[None]):
    """Shows a run's Temporal Web UI address (already copied); opens it if a browser exists."""

    BINDINGS = [
        Binding("escape", "back", "Close"),
        Binding("o", "open", "Open in browser"),
    ]

    def __init__(self, url: str, *, can_open: bool) -> None:
        super().__init__(classes="dialog")
        self.url = url
        self.can_open = can_open

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Temporal Web UI", id="dialog-title")
            yield Static(Text(self.url, style="bold underline"), id="url")
            yield Static(
                "Copied to the clipboard (where the terminal supports it)."
                + ("" if self.can_open else "\nNo browser found here: open it on your machine."),
                id="dialog-hint-copy",
            )
            with Horizontal(id="dialog-buttons"):
                if self.can_open:
                    yield Button("Open in browser", id="open", variant="primary")
                yield Button("Close", id="back")

    @on(Button.Pressed, "#open")
    def action_open(self) -> None:
        if self.can_open:
            import webbrowser

            try:
                webbrowser.open(self.url)
            except Exception as exc:  # a broken browser setup must not take the TUI down
                self.notify(f"could not open a browser: {exc}", severity="error", markup=False)
        self.dismiss(None)

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss(None)
