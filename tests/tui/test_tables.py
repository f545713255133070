"""KeyedTable: incremental sync, and rows off screen kept aside until a refresh finds them."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult

from toolwarden.tui.widgets.tables import Column, KeyedTable

ROWS = 300


class Numbers(KeyedTable):
    COLUMNS = (Column("id", "Id", 8), Column("value", "Value", 8))


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Numbers(id="numbers")


def rows(value: str) -> list[tuple[str, tuple[str | Text, ...]]]:
    return [(f"r{i:03}", (f"r{i:03}", value)) for i in range(ROWS)]


def shown(table: KeyedTable, index: int) -> str:
    cell = table.get_cell(f"r{index:03}", "value")
    assert isinstance(cell, Text)  # never a str: a str would be parsed as markup
    return cell.plain


async def test_only_rows_in_view_are_rewritten_until_they_scroll_in() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 20)) as pilot:
        table = app.query_one(Numbers)
        table.sync(rows("old"))
        await pilot.pause()
        assert table.row_count == ROWS and shown(table, ROWS - 1) == "old"

        table.sync(rows("new"))
        await pilot.pause()
        assert shown(table, 0) == "new"  # on screen
        assert shown(table, ROWS - 1) == "old"  # far below: kept aside

        table.move_cursor(row=ROWS - 1, animate=False)
        await pilot.pause()
        table.sync(rows("new"))  # the next refresh finds it in view
        assert shown(table, ROWS - 1) == "new"
        assert table.key_at(ROWS - 1) == f"r{ROWS - 1:03}"


async def test_markup_in_tool_text_is_shown_verbatim() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 20)) as pilot:
        table = app.query_one(Numbers)
        table.sync([("r000", ("r000", "[bold]x[/]"))])
        await pilot.pause()
        assert shown(table, 0) == "[bold]x[/]"
