"""Approval notifications: a run sink that tells webhooks, Slack and mail about approvals.

From each run update's new events it derives one `Notice` per approval event (requested,
decided, expired) plus a reminder a configurable time before expiry, and hands one delivery per
matching channel to the `DeliveryQueue`, which sends them on its own thread. The sink itself
only computes and enqueues, so a slow or broken endpoint never slows or fails a run.

Updates can repeat (a retried local activity hands the same events over again), so deliveries
are keyed by approval id and event and each is sent once per worker process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from toolwarden.config import NotificationSettings, NotifyChannel, Settings, SmtpChannel
from toolwarden.models import ApprovalRecord, ApprovalState, LiveDetails, RunStatus, RunUpdate
from toolwarden.notify.message import LinkFactory, Notice, NoticeEvent, NoticeLinks
from toolwarden.notify.queue import Delivery, DeliveryQueue
from toolwarden.notify.slack import SlackDelivery
from toolwarden.notify.smtp import SmtpDelivery
from toolwarden.notify.webhook import WebhookDelivery, read_secret

__all__ = [
    "ApprovalNotifier",
    "Channel",
    "DeliveryQueue",
    "LinkFactory",
    "Notice",
    "NoticeEvent",
    "NoticeLinks",
    "channels_from",
]

log = logging.getLogger(__name__)

_SEEN_CAP = 50_000  # delivery keys remembered for deduplication


@dataclass(frozen=True)
class Channel:
    """One configured destination: its filter, its approver and how it turns a notice into a send."""

    settings: NotifyChannel
    delivery: Callable[[Notice], Delivery]

    def hears(self, status: RunStatus) -> bool:
        profiles = self.settings.profiles
        profile = status.spec.profile if status.spec else None
        return not profiles or profile in profiles or status.tool_name in profiles


def channels_from(settings: NotificationSettings) -> list[Channel]:
    """The configured channels; a webhook without a readable secret is a config error (ValueError)."""
    timeout = settings.retry.timeout.total_seconds()
    channels: list[Channel] = []
    for hook in settings.webhooks:
        secret = read_secret(hook.secret, hook.secret_file)
        channels.append(Channel(hook, partial(WebhookDelivery, hook.url, secret)))
    for slack in settings.slack:
        channels.append(Channel(slack, partial(SlackDelivery, slack.webhook_url)))
    for mail in settings.smtp:
        channels.append(Channel(mail, partial(_mail, mail, timeout)))
    return channels


def _mail(settings: SmtpChannel, timeout: float, notice: Notice) -> Delivery:
    return SmtpDelivery(settings, notice, timeout)


@dataclass
class _Open:
    """A pending approval this sink knows of, and the run facts its notices carry."""

    record: ApprovalRecord
    status: RunStatus


class ApprovalNotifier:
    """The run sink. `run_changed` is called on the worker's event loop and only enqueues."""

    def __init__(
        self,
        settings: NotificationSettings,
        channels: list[Channel],
        links: LinkFactory,
        queue: DeliveryQueue,
    ) -> None:
        self._settings = settings
        self._channels = channels
        self._links = links
        self.queue = queue
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._open: dict[str, _Open] = {}
        self._reminders: set[str] = set()
        self._lock = threading.Lock()  # _open and _seen are read by the reminder timer thread

    @classmethod
    def start(cls, settings: Settings, links: LinkFactory) -> ApprovalNotifier | None:
        """A started notifier for the configured channels, or None when none is configured."""
        channels = channels_from(settings.notifications)
        if not channels:
            return None
        queue = DeliveryQueue(settings.notifications.retry)
        queue.start()
        return cls(settings.notifications, channels, links, queue)

    def stop(self) -> None:
        self.queue.stop()

    def heartbeat(self, run_id: str, live: LiveDetails) -> None:
        """Heartbeats carry nothing a notification needs."""

    def run_changed(self, update: RunUpdate) -> None:
        status = update.status
        by_key = {a.key: a for a in status.approvals}
        with self._lock:
            for event in update.events:
                key = event.data.get("key")
                record = by_key.get(key) if isinstance(key, str) else None
                if record is None:
                    continue
                if event.kind == "approval_requested":
                    self._send(NoticeEvent.REQUESTED, record, status)
                elif event.kind == "approval_decided":
                    state = ApprovalState(str(event.data.get("state", record.state.value)))
                    kind = NoticeEvent.EXPIRED if state is ApprovalState.EXPIRED else NoticeEvent.DECIDED
                    self._send(kind, record, status)
            for record in status.approvals:
                if record.state is ApprovalState.PENDING and not status.state.terminal:
                    self._open[record.approval_id] = _Open(record, status)
                    self._schedule_reminder(record)
                else:
                    self._open.pop(record.approval_id, None)
                    self._reminders.discard(record.approval_id)

    def _send(self, event: NoticeEvent, record: ApprovalRecord, status: RunStatus) -> None:
        delivery_id = f"{record.approval_id}:{event.value}"
        if delivery_id in self._seen:
            return
        self._seen[delivery_id] = None
        if len(self._seen) > _SEEN_CAP:
            self._seen.popitem(last=False)
        for channel in self._channels:
            if not channel.hears(status):
                continue
            notice = Notice(
                delivery_id=delivery_id,
                event=event,
                approval_id=record.approval_id,
                run_id=record.run_id,
                key=record.key,
                tool_name=status.tool_name,
                profile=status.spec.profile if status.spec else None,
                summary=record.summary,
                details=record.details,
                state=record.state if event is not NoticeEvent.REQUESTED else ApprovalState.PENDING,
                requested_at=record.requested_at,
                expires_at=record.expires_at,
                decided_at=record.decided_at,
                decided_by=record.decided_by,
                reason=record.reason,
                links=self._links(record, channel.settings.approver),
            )
            self.queue.submit(channel.delivery(notice))

    def _schedule_reminder(self, record: ApprovalRecord) -> None:
        before = self._settings.remind_before
        if before is None or record.approval_id in self._reminders:
            return
        remind_at = record.expires_at - before
        if remind_at <= record.requested_at:
            return  # asked with less time than the reminder lead: a reminder would only be noise
        self._reminders.add(record.approval_id)
        wait = (remind_at - datetime.now(UTC)).total_seconds()
        self.queue.call_at(time.monotonic() + max(wait, 0.0), lambda: self._remind(record.approval_id))

    def _remind(self, approval_id: str) -> None:
        with self._lock:
            still = self._open.get(approval_id)
            if still is None or still.record.expires_at <= datetime.now(UTC):
                self._open.pop(approval_id, None)
                return
            self._send(NoticeEvent.REMINDED, still.record, still.status)
