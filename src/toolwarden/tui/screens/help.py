"""The `?` screen: every key, generated from the bindings so it cannot drift from them."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

EXTRA_KEYS = [
    ("tab / shift+tab", "Move between the approvals, runs and details panels"),
    ("↑ ↓ / j k", "Move the selection"),
    ("escape", "Close a dialog or screen; clear the search"),
]


def key_table(bindings: Iterable[BindingType]) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", padding=(0, 2))
    table.add_column("Key", style="bold cyan", no_wrap=True)
    table.add_column("Does")
    for binding in bindings:
        if not isinstance(binding, Binding) or not binding.description or not binding.show:
            continue
        key = binding.key_display or binding.key
        table.add_row(key, binding.tooltip or binding.description)
    for key, does in EXTRA_KEYS:
        table.add_row(key, does)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(self, bindings: Iterable[BindingType]) -> None:
        super().__init__(classes="dialog")
        self.bindings = list(bindings)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="help"):
            yield Label("toolwarden keys", id="dialog-title")
            with VerticalScroll():
                yield Static(key_table(self.bindings))
            yield Static(Text("escape closes", style="dim"), id="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
