"""What a notification says: one `Notice` per approval event, the same for every channel.

The webhook channel posts it as JSON (its documented wire format); Slack and mail render it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, JsonValue

from toolwarden.models import ApprovalRecord, ApprovalState


class NoticeEvent(StrEnum):
    REQUESTED = "approval.requested"
    REMINDED = "approval.reminded"
    DECIDED = "approval.decided"  # approved, rejected or cancelled: `state` says which
    EXPIRED = "approval.expired"


class NoticeLinks(BaseModel):
    """Where to act: the run's page, and signed one-use decision links when an approver is set."""

    page: str
    approve: str | None = None
    reject: str | None = None


# Builds the links of one approval for the approver a channel issues them to (None: page only).
LinkFactory = Callable[[ApprovalRecord, str | None], NoticeLinks]


class Notice(BaseModel):
    """One approval event as every channel sends it."""

    # Stable per approval and event: a receiver that sees a delivery id again drops it.
    delivery_id: str
    event: NoticeEvent
    approval_id: str
    run_id: str
    key: str
    tool_name: str
    profile: str | None = None
    summary: str
    details: JsonValue = None
    state: ApprovalState
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None
    links: NoticeLinks

    @property
    def headline(self) -> str:
        """One line for a subject, a Slack fallback text or a log."""
        match self.event:
            case NoticeEvent.REQUESTED:
                what = "approval requested"
            case NoticeEvent.REMINDED:
                what = f"approval still pending, expires {self.expires_at:%Y-%m-%d %H:%M} UTC"
            case NoticeEvent.EXPIRED:
                what = "approval expired"
            case NoticeEvent.DECIDED:
                by = f" by {self.decided_by}" if self.decided_by else ""
                what = f"{self.state.value}{by}"
        return f"{self.tool_name}: {what}: {self.summary}"
