"""`toolwarden tui`: pending approvals and live runs, decided with one key.

The app never waits on the network: a 1 s timer starts a refresh worker (unless one is still
running), the worker loads a `Snapshot` through the `Loader`, and the UI thread diffs it into
the tables. Connection trouble shows as a banner while the worker keeps reconnecting through
the supervisor factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from rich.console import RenderableType
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import DescendantFocus
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Footer, Header, Input, Static

from toolwarden.cli.main import end_startup_gc_pause
from toolwarden.config import Settings
from toolwarden.errors import one_line
from toolwarden.models import DecideResult, PendingApproval, RunStatus, RunSummary
from toolwarden.tui.backend import (
    Loader,
    RunFilter,
    Snapshot,
    SupervisorAPI,
    SupervisorFactory,
    is_unavailable,
)
from toolwarden.tui.format import ago
from toolwarden.tui.logs import tail_lines
from toolwarden.tui.screens.decision import DecisionContext, DecisionDialog
from toolwarden.tui.screens.details import DetailsScreen
from toolwarden.tui.screens.dialogs import CancelDialog, FilterDialog, WebUIDialog
from toolwarden.tui.screens.help import HelpScreen
from toolwarden.tui.screens.log import LogScreen
from toolwarden.tui.widgets.details import DetailsPane, approval_view, run_view
from toolwarden.tui.widgets.fields import TextField
from toolwarden.tui.widgets.tables import ApprovalsTable, KeyedTable, RunsTable

REFRESH_SECONDS = 1.0
# CPython collects the young generation every 700 net allocations. A 1,000-row table's churn
# (textual's render caches, each refresh's snapshot) then lives just long enough to be promoted,
# and the full passes over the old generation that follow (50-90 ms each) were the TUI's
# longest stalls. With a larger young generation that churn dies young (bench/tui.py).
GC_YOUNG_THRESHOLD = 10_000
LOAD_TIMEOUT = 15.0
FAILURES_BEFORE_RECONNECT = 3
DETAIL_LOG_LINES = 30

Clock = Callable[[], datetime]
Selection = tuple[Literal["approval", "run"], str]


def utc_now() -> datetime:
    return datetime.now(UTC)


def browser_available() -> bool:
    """A graphical browser we can open without taking over this terminal."""
    import webbrowser

    graphical = sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if not graphical:
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


class ToolwardenApp(App[None]):
    """The operator console. Build it with `make_app`."""

    CSS_PATH = "app.tcss"
    TITLE = "toolwarden"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("a", "approve", "Approve", tooltip="Approve the selected approval"),
        Binding("r", "reject", "Reject", tooltip="Reject the selected approval (reason required)"),
        Binding("enter", "details", "Details", tooltip="Full details of the selection, live"),
        Binding("l", "logs", "Log", tooltip="The selected run's full log, following"),
        Binding("c", "cancel_run", "Cancel run", tooltip="Cancel the selected run (confirm)"),
        Binding("f", "filter", "Filter", tooltip="Filter runs by state and tool"),
        Binding("slash", "search", "Search", key_display="/",
                tooltip="Search approvals and runs by id, tool or summary"),
        Binding("o", "web_ui", "Web UI",
                tooltip="The selected run's Temporal Web UI address: shown, copied, opened"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="This help"),
        Binding("q", "quit", "Quit", tooltip="Quit"),
        Binding("escape", "clear_search", "Clear search", show=False),
    ]

    def __init__(
        self,
        supervisor_factory: SupervisorFactory,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        approver: str | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        super().__init__()
        self.supervisor_factory = supervisor_factory
        self.settings = settings
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.approver = approver  # None: the OS user, resolved when a decision is made
        self.supervisor: SupervisorAPI | None = None
        self.loader: Loader | None = None
        self.snapshot: Snapshot | None = None
        self.run_filter = RunFilter()
        self.search_text = ""
        self.problem: str | None = None
        self.failures = 0
        self.refreshing = False
        self.refreshes = 0
        self.last_ok: datetime | None = None  # by `clock`, like every age the app shows
        self.log_tail: dict[str, list[str] | None] = {}
        self.selection: Selection | None = None
        self._placeholder_text: dict[str, str] = {}

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept as attributes: `App.query_one` searches the active screen, which is a dialog
        # whenever one is open, and the refresh goes on underneath it.
        self.banner = Static("", id="banner")
        self.search_box = TextField(
            placeholder="search id, tool, summary… (enter keeps it, escape clears)", id="search"
        )
        self.approvals_panel = Vertical(id="approvals-panel", classes="panel")
        self.approvals_table = ApprovalsTable(id="approvals")
        self.approvals_empty = Static("Connecting…", id="approvals-empty", classes="empty")
        self.runs_panel = Vertical(id="runs-panel", classes="panel")
        self.runs_table = RunsTable(id="runs")
        self.runs_empty = Static("Connecting…", id="runs-empty", classes="empty")
        self.details_pane = DetailsPane(id="details")
        yield Header()
        yield self.banner
        yield self.search_box
        with self.approvals_panel:
            yield self.approvals_table
            yield self.approvals_empty
        with Horizontal(id="lower"):
            with self.runs_panel:
                yield self.runs_table
                yield self.runs_empty
            yield self.details_pane
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{self.settings.temporal.address} · {self.settings.temporal.namespace}"
        self.approvals_panel.border_title = "Pending approvals"
        self.runs_panel.border_title = "Runs"
        self.details_pane.border_title = "Details"
        self.search_box.display = False
        self.banner.display = False
        self.approvals_table.focus()
        self.set_interval(self.refresh_seconds, self.tick)
        # The first load imports temporalio (~0.15 s on the event loop): only once the first
        # frame is on screen.
        self.call_after_refresh(self.after_first_paint)

    def after_first_paint(self) -> None:
        end_startup_gc_pause()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        self.tick()

    # -- the refresh loop --------------------------------------------------------------------

    def tick(self) -> None:
        """Every second: redraw countdowns from what we have; start a load if none runs."""
        self.render_snapshot()
        self.refresh_now()

    def refresh_now(self) -> None:
        if not self.refreshing:
            self.refreshing = True
            self.load()

    @work(group="refresh", exit_on_error=False)
    async def load(self) -> None:
        try:
            if self.supervisor is None:
                timeout = self.settings.temporal.connect_timeout.total_seconds() + 1
                supervisor = await asyncio.wait_for(self.supervisor_factory(), timeout)
                self.supervisor = supervisor
                self.loader = Loader(supervisor)
            assert self.loader is not None
            focus = [self.selected_run_id()] if self.selected_run_id() else []
            snapshot = await asyncio.wait_for(
                self.loader.load(self.run_filter, [f for f in focus if f]), LOAD_TIMEOUT
            )
            tails: dict[str, list[str] | None] = {}
            for run_id in focus:
                if run_id:
                    directory = self.settings.logs_dir / run_id
                    tails[run_id] = await asyncio.to_thread(tail_lines, directory, DETAIL_LOG_LINES)
            self.log_tail = tails
            self.loaded(snapshot)
        except Exception as exc:  # nothing raises out of the app: it shows and retries
            self.load_failed(exc)
        finally:
            self.refreshing = False

    def loaded(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.failures = 0
        self.last_ok = self.clock()
        self.refreshes += 1
        self.problem = None
        self.banner.display = False
        self.render_snapshot()

    def load_failed(self, exc: BaseException) -> None:
        self.failures += 1
        unavailable = isinstance(exc, asyncio.TimeoutError) or is_unavailable(exc)
        address = self.settings.temporal.address
        if unavailable:
            self.problem = f"Temporal is unavailable at {address}: reconnecting…"
        else:
            self.problem = f"Could not load from Temporal at {address}: {one_line(exc)}"
        if self.supervisor is not None and unavailable and (
            self.failures >= FAILURES_BEFORE_RECONNECT
        ):
            self.supervisor = None  # next tick asks the factory for a fresh connection
            self.loader = None
        self.render_banner()

    def render_banner(self) -> None:
        banner = self.banner
        if self.problem is None:
            banner.display = False
            return
        stale = ""
        if self.last_ok is not None:
            stale = f" Showing data from {ago(self.last_ok, self.clock())} ago."
        banner.update(Text(f"⚠ {self.problem}{stale}", style="bold"))
        banner.display = True

    # -- rendering ---------------------------------------------------------------------------

    def matches(self, *fields: str | None) -> bool:
        needle = self.search_text.lower()
        return not needle or any(needle in (f or "").lower() for f in fields)

    def visible_approvals(self) -> list[PendingApproval]:
        if self.snapshot is None:
            return []
        return [
            p
            for p in self.snapshot.approvals
            if self.matches(p.approval.approval_id, p.tool_name, p.approval.summary)
        ]

    def visible_runs(self) -> list[RunSummary]:
        if self.snapshot is None:
            return []
        return [
            r
            for r in self.snapshot.runs
            if self.matches(r.run_id, r.tool_name, r.state.value if r.state else r.status)
        ]

    def render_snapshot(self) -> None:
        now = self.clock()
        if self.problem is not None:
            self.render_banner()
        if self.snapshot is None:
            return
        approvals = self.visible_approvals()
        runs = self.visible_runs()
        with self.batch_update():  # one repaint for every cell that changed
            self.approvals_table.sync_approvals(approvals, now)
            self.runs_table.sync_runs(runs, self.snapshot.statuses, now)
        searching = f" · search “{self.search_text}”" if self.search_text else ""
        total_a, total_r = len(self.snapshot.approvals), len(self.snapshot.runs)
        described = self.run_filter.describe()
        # Each of these asks textual for a layout pass when set, changed or not; every second
        # with a thousand rows on screen that is a visible hitch, so only changes are applied.
        self._set_title(
            self.approvals_panel,
            f"Pending approvals ({len(approvals)}"
            + (f" of {total_a}" if len(approvals) != total_a else "")
            + f"){searching}",
        )
        self._set_title(
            self.runs_panel,
            f"Runs ({len(runs)}" + (f" of {total_r}" if len(runs) != total_r else "") + ")"
            + (f" · {described}" if described else "")
            + searching,
        )
        self._set_empty(
            self.approvals_empty,
            not approvals,
            "No pending approvals. When a tool asks, it shows up here."
            if not self.snapshot.approvals
            else "No approval matches the search.",
        )
        if self.snapshot.runs:
            runs_empty = "No run matches the search."
        elif described:
            runs_empty = f"No runs with {described}. Press f to change the filter."
        else:
            runs_empty = "No runs yet. Start one with: toolwarden run -- COMMAND"
        self._set_empty(self.runs_empty, not runs, runs_empty)
        self.update_selection()

    @staticmethod
    def _set_title(panel: Vertical, title: str) -> None:
        if panel.border_title != title:
            panel.border_title = title

    def _set_empty(self, placeholder: Static, shown: bool, text: str) -> None:
        if placeholder.display != shown:
            placeholder.display = shown
        if self._placeholder_text.get(placeholder.id or "") != text:
            self._placeholder_text[placeholder.id or ""] = text
            placeholder.update(text)

    # -- selection and details ---------------------------------------------------------------

    def focused_table(self) -> KeyedTable | None:
        focused = self.focused
        if isinstance(focused, KeyedTable):
            return focused
        return None

    def update_selection(self) -> None:
        self.selection = self.current_selection()
        self.render_details()

    def current_selection(self) -> Selection | None:
        """What the cursor is on now: read from the focused table, not from a message that may
        still be queued behind the key press that asks for it."""
        table = self.focused_table()
        if table is None:
            # Focus is on the details pane or the search box: keep the last selection.
            if self.selection is not None:
                return self.selection
            table = self.approvals_table if self.approvals_table.row_count else self.runs_table
        key = table.selected_key
        if key is None:
            return None
        return ("approval" if table is self.approvals_table else "run", key)

    def render_details(self) -> None:
        self.details_pane.show(self.details_renderable())

    def details_renderable(self, selection: Selection | None = None) -> RenderableType:
        selection = selection or self.selection
        if self.snapshot is None:
            return Text("Loading…", style="dim")
        if selection is None:
            return Text("Nothing selected.", style="dim")
        kind, key = selection
        now = self.clock()
        if kind == "approval":
            pending = self.find_approval(key)
            if pending is None:
                return Text(f"{key} is no longer pending.", style="dim")
            return approval_view(pending, now)
        summary = next((r for r in self.snapshot.runs if r.run_id == key), None)
        status = self.snapshot.statuses.get(key)
        return run_view(key, summary, status, self.log_tail.get(key), now)

    def find_approval(self, approval_id: str) -> PendingApproval | None:
        if self.snapshot is None:
            return None
        return next(
            (p for p in self.snapshot.approvals if p.approval.approval_id == approval_id), None
        )

    def selected_run_id(self) -> str | None:
        selection = self.current_selection()
        if selection is None:
            return None
        kind, key = selection
        if kind == "run":
            return key
        pending = self.find_approval(key)
        return pending.approval.run_id if pending else key.rpartition("/")[0] or None

    def selected_approval(self) -> PendingApproval | None:
        """The highlighted approval, or the first pending approval of the highlighted run."""
        selection = self.current_selection()
        if selection is None or self.snapshot is None:
            return None
        kind, key = selection
        if kind == "approval":
            return self.find_approval(key)
        return next((p for p in self.snapshot.approvals if p.approval.run_id == key), None)

    def run_status(self, run_id: str) -> RunStatus | None:
        return self.snapshot.statuses.get(run_id) if self.snapshot else None

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.update_selection()

    @on(DescendantFocus)
    def _focus_moved(self) -> None:
        if self.snapshot is not None:
            self.update_selection()

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_details()

    # -- actions -----------------------------------------------------------------------------

    def decision_context(self) -> DecisionContext:
        # Imported here, not at the top: the client pulls in temporalio (see `after_first_paint`).
        from toolwarden.client import os_user

        user = os_user()
        return DecisionContext(
            by=self.approver or user,
            acting_user=user,
            supervisor=lambda: self.supervisor,
            clock=self.clock,
        )

    def _decide(self, approve: bool) -> None:
        pending = self.selected_approval()
        if pending is None:
            self.say("Select a pending approval first.", severity="warning")
            return
        self.push_screen(
            DecisionDialog(pending, approve=approve, context=self.decision_context()),
            self._decided,
        )

    def _decided(self, result: DecideResult | None) -> None:
        if result is None:
            return
        a = result.approval
        if result.queued or a is None:
            self.say(result.message, severity="warning")
        elif result.took_effect:
            self.say(f"{a.approval_id} {a.state.value} by {a.decided_by}")
            if self.snapshot is not None:  # show it gone now; the next load confirms
                self.snapshot.approvals = [
                    p for p in self.snapshot.approvals if p.approval.approval_id != a.approval_id
                ]
                self.render_snapshot()
        self.refresh_now()

    def action_approve(self) -> None:
        self._decide(True)

    def action_reject(self) -> None:
        self._decide(False)

    def action_details(self) -> None:
        selection = self.current_selection()
        if selection is None:
            self.say("Nothing selected.", severity="warning")
            return
        self.push_screen(
            DetailsScreen(f"{selection[0]} {selection[1]}",
                          lambda: self.details_renderable(selection))
        )

    def action_logs(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None:
            self.say("Select a run first.", severity="warning")
            return
        self.push_screen(
            LogScreen(run_id, self.settings.logs_dir / run_id, lambda: self.supervisor)
        )

    def action_cancel_run(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None:
            self.say("Select a run first.", severity="warning")
            return
        status = self.run_status(run_id)
        if status is not None and status.state.terminal:
            self.say(f"{run_id} has already ended ({status.state.value}).", severity="warning")
            return
        tool = status.tool_name if status else "?"

        def confirmed(reason: str | None) -> None:
            if reason is not None:
                self.cancel_run(run_id, reason or None)

        self.push_screen(CancelDialog(run_id, tool), confirmed)

    @work(group="actions", exit_on_error=False)
    async def cancel_run(self, run_id: str, reason: str | None) -> None:
        supervisor = self.supervisor
        if supervisor is None:
            self.say("Not connected to Temporal; try again.", severity="error")
            return
        try:
            await supervisor.get_run(run_id).cancel(reason or "cancelled from the TUI")
        except Exception as exc:
            self.say(f"Could not cancel {run_id}: {one_line(exc)}", severity="error")
            return
        self.say(f"Cancelling {run_id}…")
        self.refresh_now()

    def action_filter(self) -> None:
        tools = sorted({r.tool_name for r in self.snapshot.runs if r.tool_name}) if (
            self.snapshot
        ) else []

        def chosen(new: RunFilter | None) -> None:
            if new is not None and new != self.run_filter:
                self.run_filter = new
                self.render_snapshot()
                self.refresh_now()

        self.push_screen(FilterDialog(self.run_filter, tools), chosen)

    def action_search(self) -> None:
        search = self.search_box
        search.display = True
        search.focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value.strip()
        self.render_snapshot()

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        if not self.search_text:
            self.search_box.display = False
        table = self.approvals_table if self.approvals_table.row_count else self.runs_table
        table.focus()

    def action_clear_search(self) -> None:
        search = self.search_box
        if search.display or self.search_text:
            search.value = ""
            search.display = False
            self.search_text = ""
            self.approvals_table.focus()
            self.render_snapshot()

    def web_ui_url(self, run_id: str) -> str:
        if self.supervisor is not None:
            return self.supervisor.web_ui_url(run_id)
        namespace = self.settings.temporal.namespace
        return f"{self.settings.ui_url}/namespaces/{namespace}/workflows/{run_id}"

    def action_web_ui(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None:
            self.say("Select a run first.", severity="warning")
            return
        url = self.web_ui_url(run_id)
        # A terminal without clipboard support still shows the address.
        with contextlib.suppress(Exception):
            self.copy_to_clipboard(url)
        self.push_screen(WebUIDialog(url, can_open=browser_available()))

    def say(self, message: str, severity: SeverityLevel = "information") -> None:
        """A toast; never markup (run ids, errors and summaries may contain brackets)."""
        self.notify(message, severity=severity, markup=False)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.BINDINGS))


def make_app(
    supervisor_factory: SupervisorFactory,
    settings: Settings,
    *,
    clock: Clock = utc_now,
    approver: str | None = None,
    refresh_seconds: float = REFRESH_SECONDS,
) -> ToolwardenApp:
    """The TUI, loading through `supervisor_factory` (called again to reconnect)."""
    return ToolwardenApp(
        supervisor_factory,
        settings,
        clock=clock,
        approver=approver,
        refresh_seconds=refresh_seconds,
    )


__all__ = ["ToolwardenApp", "make_app"]
