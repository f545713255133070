#!/usr/bin/env python3
"""The baseline of bench/tui.py: the smallest textual app, one `Static("ready")` and `q` to quit.

Usage: textual_minimal.py

Launched like `toolwarden tui` (same interpreter, same pseudo-terminal size and environment), so
the difference between the two first paints is what toolwarden adds to textual's own start-up.
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Static


class Minimal(App[None]):
    BINDINGS = [Binding("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Static("ready")


if __name__ == "__main__":
    Minimal().run()
