"""The details pane: the selected approval as pretty JSON, or the run's status and log tail."""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from toolwarden.models import ApprovalRecord, PendingApproval, RunStatus, RunSummary
from toolwarden.tui.format import ago, countdown, progress_bar, state_text


def _fields(rows: list[tuple[str, RenderableType]]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def pretty_json(value: object) -> RenderableType:
    if value is None:
        return Text("(none)", style="dim")
    return JSON(json.dumps(value, default=str), indent=2)


def approval_view(p: PendingApproval, now: datetime) -> RenderableType:
    a = p.approval
    return Group(
        Text(a.summary, style="bold"),
        Text(""),
        _fields(
            [
                ("approval", a.approval_id),
                ("tool", p.tool_name),
                ("run", a.run_id),
                ("state", a.state.value),
                ("asked", f"{ago(a.requested_at, now)} ago"),
                ("expires in", countdown(a.expires_at, now)),
                ("on expiry", a.on_expiry.value),
                ("source", a.source.value),
            ]
        ),
        Text(""),
        Text("details", style="bold underline"),
        pretty_json(a.details),
    )


def record_line(a: ApprovalRecord, now: datetime) -> Text:
    if a.state.value == "pending":
        return Text.assemble(
            (f"{a.key}: pending", "bold yellow"), f" (expires in {countdown(a.expires_at, now)})"
        )
    by = f" by {a.decided_by}" if a.decided_by else ""
    return Text(f"{a.key}: {a.state.value}{by}")


def run_view(
    run_id: str,
    summary: RunSummary | None,
    status: RunStatus | None,
    log_lines: list[str] | None,
    now: datetime,
) -> RenderableType:
    if status is None:
        state = summary.state if summary else None
        return Group(
            Text(run_id, style="bold"),
            _fields([("state", state_text(state, summary.status if summary else "?"))]),
            Text("loading status…", style="dim"),
        )
    live = status.live if not status.state.terminal else None
    rows: list[tuple[str, RenderableType]] = [
        ("run", status.run_id),
        ("tool", status.tool_name),
        ("command", " ".join(status.argv)),
        ("state", state_text(status.state)),
        ("attempt", f"{status.attempt}" + (f" ({status.retry_count} retries)" if status.retry_count else "")),
        ("started", f"{ago(status.started_at, now)} ago"),
    ]
    if status.ended_at:
        rows.append(("ended", f"{ago(status.ended_at, now)} ago"))
    if live is not None:
        if live.last_heartbeat_at:
            rows.append(("heartbeat", f"{ago(live.last_heartbeat_at, now)} ago"))
        if live.progress is not None:
            rows.append(("progress", progress_bar(live.progress, 20)))
        if live.message:
            rows.append(("message", live.message))
        if live.pid:
            rows.append(("pid", f"{live.pid} on {live.host or '?'}"))
    if status.exit_code is not None:
        rows.append(("exit code", str(status.exit_code)))
    if status.signal:
        rows.append(("signal", status.signal))
    if status.error:
        rows.append(("error", Text(status.error, style="red")))
    parts: list[RenderableType] = [_fields(rows)]
    if status.approvals:
        parts += [Text(""), Text("approvals", style="bold underline")]
        parts += [record_line(a, now) for a in status.approvals]
    lines = log_lines
    if lines is None:
        lines = (live.tail if live else None) or (
            status.last_attempt.tail if status.last_attempt else []
        )
    parts += [Text(""), Text("last output", style="bold underline")]
    if lines:
        parts += [
            Text(line, style="red" if line.startswith("! ") else "", no_wrap=True, overflow="ellipsis")
            for line in lines
        ]
    else:
        parts.append(Text("(no output yet)", style="dim"))
    return Group(*parts)


class DetailsPane(VerticalScroll):
    """Scrollable; shows whatever the app hands it, keeping the scroll position."""

    DEFAULT_CSS = """
    DetailsPane > Static { width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.body = Static(Text("Nothing selected.", style="dim"), id="details-body")

    def compose(self) -> ComposeResult:
        yield self.body

    def show(self, renderable: RenderableType) -> None:
        self.body.update(renderable)
