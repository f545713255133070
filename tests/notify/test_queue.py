"""The delivery queue: retries with backoff, gives up into /metrics, never blocks the caller."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.notify.receivers import HttpReceiver
from tests.support import eventually, free_port
from toolwarden import metrics
from toolwarden.config import NotifyRetry
from toolwarden.models import ApprovalState
from toolwarden.notify import DeliveryQueue, Notice, NoticeEvent, NoticeLinks
from toolwarden.notify.webhook import WebhookDelivery


def notice(delivery_id: str = "run-1/deploy:approval.requested") -> Notice:
    now = datetime.now(UTC)
    return Notice(
        delivery_id=delivery_id, event=NoticeEvent.REQUESTED, approval_id="run-1/deploy",
        run_id="run-1", key="deploy", tool_name="deployer", summary="Deploy",
        state=ApprovalState.PENDING, requested_at=now, expires_at=now + timedelta(hours=1),
        links=NoticeLinks(page="http://x/runs/run-1"),
    )


def sample(name: str, channel: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"channel": channel}) or 0.0


@pytest.fixture
def queue() -> Iterator[DeliveryQueue]:
    queue = DeliveryQueue(NotifyRetry(attempts=3, initial=timedelta(milliseconds=20)))
    queue.start()
    yield queue
    queue.stop()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


async def test_a_failing_endpoint_is_retried_until_it_answers(
    queue: DeliveryQueue, receiver: HttpReceiver
) -> None:
    receiver.statuses = [500, 503]
    retries = sample("toolwarden_notification_retries_total", "webhook")
    sent = sample("toolwarden_notifications_sent_total", "webhook")
    queue.submit(WebhookDelivery(f"{receiver.url}/hook", b"k", notice()))
    await eventually(lambda: sample("toolwarden_notifications_sent_total", "webhook") == sent + 1)
    assert len(receiver.at("/hook")) == 3
    assert sample("toolwarden_notification_retries_total", "webhook") == retries + 2
    ids = {r.headers["X-Toolwarden-Delivery"] for r in receiver.at("/hook")}
    assert ids == {"run-1/deploy:approval.requested"}


async def test_an_endpoint_that_never_answers_counts_as_failed_in_metrics(queue: DeliveryQueue) -> None:
    failed = sample("toolwarden_notifications_failed_total", "webhook")
    started = time.monotonic()
    queue.submit(WebhookDelivery(f"http://127.0.0.1:{free_port()}/gone", b"k", notice()))
    assert time.monotonic() - started < 0.1  # submit only enqueues
    await eventually(lambda: sample("toolwarden_notifications_failed_total", "webhook") == failed + 1)
    text = metrics.render().decode()  # what /metrics serves
    assert 'toolwarden_notifications_failed_total{channel="webhook"}' in text
