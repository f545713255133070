"""The approvals and runs panels: DataTables updated in place, row by row, keyed by id.

`sync()` adds new rows, removes vanished ones and rewrites only the cells that changed, so a
refresh of 1,000 rows where nothing moved costs a dictionary comparison, not a rebuild, and the
cursor stays on the row the operator was looking at. Rows are described with plain strings and
shared styled `Text` instances, compared as they are; a `Text` is built only for a cell that
changed, so a refresh allocates next to nothing the collector would later have to scan.

Only rows on screen (and a screen's worth either side) are rewritten; the others keep their
latest values aside until a refresh finds them in view (within a second; rewriting as they
scroll in would make every key press re-render the table). Ages and countdowns change every
second on every row, and rewriting 1,000 rows a second is what made textual re-render, allocate
and collect enough to stall the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.console import RenderableType
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from toolwarden.models import PendingApproval, RunStatus, RunSummary
from toolwarden.tui.format import ago, clip, coarse_ago, countdown, progress_bar, state_text

Cell = str | Text  # a str is shown as plain text, never parsed as markup
Cells = tuple[Cell, ...]


def renderable(cell: Cell) -> RenderableType:
    # Plain strings in a DataTable are parsed as markup; tool-given text must not be.
    return cell if isinstance(cell, Text) else Text(cell)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int


class KeyedTable(DataTable[RenderableType]):
    """A DataTable whose rows are identified by a string key and synced incrementally."""

    COLUMNS: Sequence[Column] = ()
    BINDINGS = [
        Binding("enter", "select_cursor", "Details"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._cells: dict[str, Cells] = {}  # what each row shows
        self._wanted: dict[str, Cells] = {}  # what it should show once on screen
        self.order: list[str] = []
        for column in self.COLUMNS:
            self.add_column(column.label, key=column.key, width=column.width)

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return None if row_key.value is None else str(row_key.value)

    def sync(self, rows: Sequence[tuple[str, Cells]]) -> None:
        """Make the table show exactly `rows`, in that order, touching only what changed."""
        selected = self.selected_key
        cursor_row = self.cursor_row
        wanted = dict(rows)
        for key in [k for k in self._cells if k not in wanted]:
            self.remove_row(key)
            del self._cells[key]
            del self._wanted[key]
        added = False
        for key, cells in rows:
            if key not in self._cells:
                self.add_row(*map(renderable, cells), key=key)
                self._cells[key] = cells
                added = True
            self._wanted[key] = cells
        order = [key for key, _ in rows]
        if added or order != self.order:
            current = [str(row.key.value) for row in self.ordered_rows]
            if current != order:
                position = {key: index for index, key in enumerate(order)}
                first = self.COLUMNS[0].key
                self.sort(first, key=lambda cell: position[self._key_of_cell(cell)])
        self.order = order
        self.show_visible()
        if selected is not None and selected in wanted:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)
        elif self.row_count:
            self.move_cursor(row=min(cursor_row, self.row_count - 1), animate=False)

    def show_visible(self) -> None:
        """Bring the rows on screen, and a screen's worth either side, up to date."""
        height = max(self.size.height, 1)
        top = int(self.scroll_y)
        for key in self.order[max(top - height, 0) : top + 2 * height]:
            shown, wanted = self._cells[key], self._wanted[key]
            if shown != wanted:
                for column, before, after in zip(self.COLUMNS, shown, wanted, strict=True):
                    if before != after:
                        self.update_cell(key, column.key, renderable(after))
                self._cells[key] = wanted

    def _key_of_cell(self, cell: object) -> str:
        """Row key from the first column's value (which holds the key itself)."""
        return cell.plain if isinstance(cell, Text) else str(cell)

    def key_at(self, index: int) -> str | None:
        if 0 <= index < len(self.order):
            return self.order[index]
        return None


class ApprovalsTable(KeyedTable):
    COLUMNS = (
        Column("id", "Approval", 32),
        Column("tool", "Tool", 12),
        Column("summary", "Summary", 44),
        Column("age", "Age", 7),
        Column("expires", "Expires in", 10),
    )

    def sync_approvals(self, approvals: Sequence[PendingApproval], now: datetime) -> None:
        self.sync([(p.approval.approval_id, approval_cells(p, now)) for p in approvals])


def approval_cells(p: PendingApproval, now: datetime) -> Cells:
    a = p.approval
    return (
        a.approval_id,
        clip(p.tool_name, 12),
        clip(a.summary, 44),
        ago(a.requested_at, now),
        countdown(a.expires_at, now),
    )


class RunsTable(KeyedTable):
    COLUMNS = (
        Column("run", "Run", 24),
        Column("state", "State", 16),
        Column("tool", "Tool", 10),
        Column("attempt", "Try", 3),
        Column("age", "Age", 6),
        Column("beat", "Beat", 5),
        Column("progress", "Progress", 11),
    )

    def sync_runs(
        self, runs: Sequence[RunSummary], statuses: dict[str, RunStatus], now: datetime
    ) -> None:
        self.sync([(r.run_id, run_cells(r, statuses.get(r.run_id), now)) for r in runs])


def run_cells(run: RunSummary, status: RunStatus | None, now: datetime) -> Cells:
    # The listing (visibility) is fresher for the state; the status query has the rest.
    state = run.state or (status.state if status else None)
    live = status.live if status is not None and state is not None and not state.terminal else None
    beat = ago(live.last_heartbeat_at, now) if live and live.last_heartbeat_at else "-"
    progress = live.progress if live else None
    if progress is None and status is not None and status.last_attempt is not None:
        progress = status.last_attempt.progress
    return (
        run.run_id,
        state_text(state, run.status),
        clip(run.tool_name or (status.tool_name if status else "?"), 10),
        str(status.attempt) if status is not None else "…",
        coarse_ago(run.started_at, now),
        beat,
        progress_bar(progress, 6),
    )
