"""The `enter` screen: the selection's details full-size, re-rendered live."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import RenderableType
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header

from toolwarden.tui.widgets.details import DetailsPane

REFRESH_SECONDS = 0.5


class DetailsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("q", "close", "Back", show=False),
    ]

    def __init__(self, title: str, render: Callable[[], RenderableType]) -> None:
        super().__init__()
        self.heading = title
        self.render_details = render

    def compose(self) -> ComposeResult:
        yield Header()
        yield DetailsPane(id="details-full")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.heading
        pane = self.query_one(DetailsPane)
        pane.focus()
        self._refresh_view()
        self.set_interval(REFRESH_SECONDS, self._refresh_view)

    def _refresh_view(self) -> None:
        self.query_one(DetailsPane).show(self.render_details())

    def action_close(self) -> None:
        self.dismiss(None)
