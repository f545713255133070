"""Text fields: an `Input` whose cursor holds still when nobody is watching it blink.

A blinking cursor is a 0.5 s timer flipping the cursor cell on and off, so a screenshot of a
headless app (tests, snapshots, docs) shows the cursor or not depending on when it was taken.
Headless, the cursor stays on; in a terminal it blinks as usual.
"""

from __future__ import annotations

from textual.widgets import Input


class TextField(Input):
    """`Input` with a steady cursor in headless mode (see the module docstring)."""

    def on_mount(self) -> None:
        if self.app.is_headless:
            self.cursor_blink = False
