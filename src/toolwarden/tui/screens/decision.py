"""The approve / reject dialog: it decides itself, so a decision made elsewhere is reported here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import JsonValue
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from toolwarden.errors import one_line
from toolwarden.models import ApprovalRecord, ApprovalState, DecideResult, PendingApproval
from toolwarden.tui.backend import SupervisorAPI, is_unavailable
from toolwarden.tui.format import ago, countdown
from toolwarden.tui.widgets.fields import TextField

STATE_POLL_SECONDS = 1.0
STATE_POLL_TIMEOUT = 15.0


@dataclass
class DecisionContext:
    """What the dialog needs from the app: who decides (and the OS user deciding through it),
    the live supervisor, the clock."""

    by: str
    acting_user: str
    supervisor: Callable[[], SupervisorAPI | None]
    clock: Callable[[], datetime]


def decided_elsewhere(record: ApprovalRecord, now: datetime) -> str:
    by = f" by {record.decided_by}" if record.decided_by else ""
    when = f" {ago(record.decided_at, now)} ago" if record.decided_at else ""
    reason = f" ({record.reason})" if record.reason else ""
    return f"Already {record.state.value}{by}{when}{reason}: this decision can no longer take effect."


class DecisionDialog(ModalScreen[DecideResult | None]):
    """Approve (reason optional) or reject (reason required) one approval; enter confirms."""

    BINDINGS = [
        Binding("escape", "close", "Cancel"),
        Binding("ctrl+s", "confirm", "Confirm", show=False),
    ]

    def __init__(self, pending: PendingApproval, *, approve: bool, context: DecisionContext) -> None:
        super().__init__(classes="dialog")
        self.pending = pending
        self.approve = approve
        self.context = context
        self.closed_state: ApprovalState | None = None
        self.submitting = False
        self.polling = False
        self.result: DecideResult | None = None

    @property
    def verb(self) -> str:
        return "Approve" if self.approve else "Reject"

    def compose(self) -> ComposeResult:
        a = self.pending.approval
        with Vertical(id="dialog", classes="approve" if self.approve else "reject"):
            yield Label(f"{self.verb} {a.approval_id}?", id="dialog-title")
            yield Static(Text(a.summary, style="bold"), id="dialog-summary")
            yield Static(self._facts(), id="dialog-facts")
            yield Label("Reason" + (" (optional)" if self.approve else " (required)"))
            yield TextField(placeholder="why", id="reason")
            yield Label("Response JSON for the tool (optional)")
            yield TextField(placeholder='e.g. {"ticket": "OPS-1"}', id="response")
            yield Static("", id="dialog-state")
            yield Static("", id="dialog-error")
            with Horizontal(id="dialog-buttons"):
                yield Button(
                    self.verb,
                    id="confirm",
                    variant="success" if self.approve else "error",
                )
                yield Button("Cancel", id="close")
            yield Static("enter confirms · escape cancels", id="dialog-hint")

    def _facts(self) -> Table:
        a = self.pending.approval
        now = self.context.clock()
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        grid.add_row("tool", self.pending.tool_name)
        grid.add_row("run", a.run_id)
        grid.add_row("asked", f"{ago(a.requested_at, now)} ago")
        grid.add_row("expires in", countdown(a.expires_at, now))
        return grid

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()
        self.set_interval(STATE_POLL_SECONDS, self._tick)
        self.poll_state()

    def _tick(self) -> None:
        self.query_one("#dialog-facts", Static).update(self._facts())
        if self.closed_state is None and not self.submitting:
            self.poll_state()

    def poll_state(self) -> None:
        """Start a check of the approval's state unless one is still out: a status query slower
        than the tick must finish, not be replaced by the next one (which would never finish
        either on a slow server)."""
        if not self.polling:
            self.polling = True
            self._poll_state()

    # -- reporting ---------------------------------------------------------------------------

    def show_error(self, message: str) -> None:
        self.query_one("#dialog-error", Static).update(Text(message, style="bold red"))

    def show_closed(self, message: str, state: ApprovalState) -> None:
        """The approval is no longer pending: say so, and leave only Close."""
        self.closed_state = state
        self.query_one("#dialog-state", Static).update(Text(message, style="bold yellow"))
        self.query_one("#dialog-error", Static).update("")
        self.query_one("#confirm", Button).disabled = True
        self.query_one("#close", Button).label = "Close"
        self.query_one("#close", Button).focus()

    # -- actions -----------------------------------------------------------------------------

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#confirm")
    def _confirm_pressed(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#close")
    def _close_pressed(self) -> None:
        self.action_close()

    def action_close(self) -> None:
        self.dismiss(self.result)

    def action_confirm(self) -> None:
        if self.closed_state is not None:
            self.dismiss(self.result)
            return
        if self.submitting:
            return
        reason = self.query_one("#reason", Input).value.strip()
        if not self.approve and not reason:
            self.show_error("A reason is required to reject.")
            self.query_one("#reason", Input).focus()
            return
        # Imported here: the client pulls in temporalio, which must not delay the first frame.
        from toolwarden.client import InvalidResponse, parse_response

        try:
            response = parse_response(self.query_one("#response", Input).value)
        except InvalidResponse as exc:
            self.show_error(f"Response is {exc}.")
            self.query_one("#response", Input).focus()
            return
        self.submitting = True
        self.query_one("#confirm", Button).disabled = True
        self.query_one("#dialog-error", Static).update(Text("Sending…", style="dim"))
        self._decide(reason or None, response)

    @work(exclusive=True, group="decide", exit_on_error=False)
    async def _decide(self, reason: str | None, response: JsonValue) -> None:
        from toolwarden.client import DecisionRefused, RefusalReason

        supervisor = self.context.supervisor()
        try:
            if supervisor is None:
                raise ConnectionError("not connected to Temporal")
            result = await supervisor.decide(
                self.pending.approval.approval_id,
                approve=self.approve,
                by=self.context.by,
                reason=reason,
                response=response,
                acting_user=self.context.acting_user,
            )
        except DecisionRefused as exc:
            self.submitting = False
            if exc.reason is RefusalReason.NOT_ALLOWED:
                self.show_error(f"Not allowed: {exc}.")
            elif exc.reason is RefusalReason.ALREADY_DECIDED and exc.approval is not None:
                self.show_closed(
                    "Not changed. " + decided_elsewhere(exc.approval, self.context.clock()),
                    exc.approval.state,
                )
            else:
                self.show_closed(f"Not changed: {one_line(exc)}", ApprovalState.CANCELLED)
            return
        except Exception as exc:
            self.submitting = False
            self.query_one("#confirm", Button).disabled = False
            prefix = "Temporal is unavailable" if is_unavailable(exc) else "Failed"
            self.show_error(f"{prefix}: {one_line(exc)}. Press enter to try again.")
            return
        self.submitting = False
        self.result = result
        self.dismiss(result)

    @work(group="poll", exit_on_error=False)
    async def _poll_state(self) -> None:
        a = self.pending.approval
        supervisor = self.context.supervisor()
        try:
            if supervisor is None:
                return
            status = await asyncio.wait_for(
                supervisor.get_run(a.run_id).status(), STATE_POLL_TIMEOUT
            )
        except Exception:
            return  # the main screen's banner reports connection trouble
        finally:
            self.polling = False
        if self.submitting or self.closed_state is not None:
            return
        record = next((r for r in status.approvals if r.key == a.key), None)
        if record is not None and record.state is not ApprovalState.PENDING:
            self.show_closed(decided_elsewhere(record, self.context.clock()), record.state)
        elif record is None or status.state.terminal:
            self.show_closed(f"The run has ended ({status.state.value}).", ApprovalState.CANCELLED)
