"""Deliveries on a background thread: retried with exponential backoff, counted in /metrics.

A run never waits for a delivery and never sees one fail: `submit` only pushes onto a heap, and
a failure is logged and retried until the attempts run out, then counted in
`toolwarden_notifications_failed_total`. Deliveries still queued when the worker stops are
dropped (and logged): notifications are a courtesy, the approval itself is durable.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from prometheus_client import Counter, Gauge

from toolwarden.config import NotifyRetry
from toolwarden.metrics import REGISTRY

log = logging.getLogger(__name__)

NOTIFICATIONS_SENT = Counter(
    "toolwarden_notifications_sent", "Notifications delivered, by channel kind.",
    ["channel"], registry=REGISTRY,
)
NOTIFICATIONS_FAILED = Counter(
    "toolwarden_notifications_failed",
    "Notifications given up on after every retry failed, by channel kind.",
    ["channel"], registry=REGISTRY,
)
NOTIFICATION_RETRIES = Counter(
    "toolwarden_notification_retries", "Delivery attempts that failed and were retried.",
    ["channel"], registry=REGISTRY,
)
NOTIFICATIONS_QUEUED = Gauge(
    "toolwarden_notifications_queued", "Deliveries and reminders waiting on this worker.",
    registry=REGISTRY,
)


class Delivery(Protocol):
    """One message to one channel; `send` raises on any failure, to be retried."""

    channel: str  # the channel kind, a metrics label: webhook, slack, smtp
    description: str

    def send(self, http: httpx.Client) -> None: ...


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    delivery: Delivery | None = field(compare=False, default=None)
    call: Callable[[], None] | None = field(compare=False, default=None)
    attempt: int = field(compare=False, default=1)


class DeliveryQueue:
    """A heap of deliveries and timed calls, worked by one daemon thread."""

    def __init__(self, retry: NotifyRetry) -> None:
        self._retry = retry
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=retry.timeout.total_seconds(), follow_redirects=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="toolwarden-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._heap:
            log.warning("dropping %d queued notification(s) as the worker stops", len(self._heap))
        self._http.close()

    def submit(self, delivery: Delivery) -> None:
        self._push(_Job(time.monotonic(), next(self._seq), delivery=delivery))

    def call_at(self, due_monotonic: float, call: Callable[[], None]) -> None:
        """Run `call` on the delivery thread at `due_monotonic` (a reminder); it must not block."""
        self._push(_Job(due_monotonic, next(self._seq), call=call))

    @property
    def backlog(self) -> int:
        return len(self._heap)

    def _push(self, job: _Job) -> None:
        with self._wake:
            heapq.heappush(self._heap, job)
            NOTIFICATIONS_QUEUED.set(len(self._heap))
            self._wake.notify()

    def _next(self) -> _Job | None:
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                if self._heap and self._heap[0].due <= now:
                    job = heapq.heappop(self._heap)
                    NOTIFICATIONS_QUEUED.set(len(self._heap))
                    return job
                self._wake.wait(self._heap[0].due - now if self._heap else None)
            return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            if job.call is not None:
                try:
                    job.call()
                except Exception:
                    log.exception("notification timer failed")
            if job.delivery is not None:
                self._deliver(job)

    def _deliver(self, job: _Job) -> None:
        delivery = job.delivery
        assert delivery is not None
        try:
            delivery.send(self._http)
        except Exception as exc:
            if job.attempt >= self._retry.attempts:
                NOTIFICATIONS_FAILED.labels(delivery.channel).inc()
                log.warning(
                    "notification %s failed %d time(s), giving up: %s",
                    delivery.description, job.attempt, exc,
                )
                return
            NOTIFICATION_RETRIES.labels(delivery.channel).inc()
            delay = min(
                self._retry.initial.total_seconds() * 2 ** (job.attempt - 1),
                self._retry.maximum.total_seconds(),
            )
            log.info("notification %s failed (%s); retrying in %.1fs", delivery.description, exc, delay)
            self._push(
                _Job(time.monotonic() + delay, next(self._seq), delivery=delivery, attempt=job.attempt + 1)
            )
            return
        NOTIFICATIONS_SENT.labels(delivery.channel).inc()
