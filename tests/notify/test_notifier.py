"""Notifications from real runs: a real worker, a real tool asking, local receivers.

The notifier is the worker's run sink; here it is handed to the test's own worker.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.conftest import make_settings
from tests.notify.receivers import HttpReceiver, SmtpReceiver
from tests.support import eventually, tool
from toolwarden.activities.tool_run import ToolActivities
from toolwarden.client import Supervisor
from toolwarden.config import (
    NotificationSettings,
    NotifyRetry,
    Settings,
    SlackChannel,
    SmtpChannel,
    WebhookChannel,
)
from toolwarden.http.links import LinkAction, LinkSigner
from toolwarden.metrics import MetricsSink
from toolwarden.models import ApprovalState, RunUpdate
from toolwarden.notify import ApprovalNotifier, Notice, NoticeEvent
from toolwarden.notify.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from toolwarden.worker.runner import build_worker

SECRET = "webhook-secret-for-tests"
BASE_URL = "http://approvals.test"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    server = SmtpReceiver()
    yield server
    server.stop()


@pytest.fixture
def notify_settings(
    tmp_path: Path, temporal_address: str, receiver: HttpReceiver, smtp: SmtpReceiver
) -> Settings:
    settings = make_settings(tmp_path / "home", temporal_address)
    settings.notifications = NotificationSettings(
        base_url=BASE_URL,
        remind_before=timedelta(seconds=2),
        retry=NotifyRetry(attempts=3, initial=timedelta(milliseconds=50)),
        webhooks=[WebhookChannel(url=f"{receiver.url}/hook", secret=SECRET, approver="alice")],
        slack=[SlackChannel(webhook_url=f"{receiver.url}/slack", approver="alice")],
        smtp=[SmtpChannel(port=smtp.port, to=["ops@example.com"], approver="alice")],
    )
    return settings


@pytest.fixture
def signer(notify_settings: Settings) -> LinkSigner:
    return LinkSigner(b"s" * 32, notify_settings.web_base_url)


@pytest.fixture
async def notifier(
    client: Client, notify_settings: Settings, signer: LinkSigner
) -> AsyncIterator[ApprovalNotifier]:
    notifier = ApprovalNotifier.start(notify_settings, signer.notice_links)
    assert notifier is not None
    activities = ToolActivities(notify_settings, [MetricsSink(), notifier])
    async with build_worker(client, notify_settings, activities=activities):
        yield notifier
    notifier.stop()


def notices(receiver: HttpReceiver, path: str) -> list[Notice]:
    return [Notice.model_validate_json(r.body) for r in receiver.at(path)]


def hook_events(receiver: HttpReceiver) -> list[str]:
    return [n.event.value for n in notices(receiver, "/hook")]


async def test_requested_and_decided_reach_the_webhook_slack_and_mail_signed(
    notifier: ApprovalNotifier,
    notify_settings: Settings,
    client: Client,
    signer: LinkSigner,
    receiver: HttpReceiver,
    smtp: SmtpReceiver,
    run_id: Any,
) -> None:
    supervisor = Supervisor(client, notify_settings)
    details = json.dumps({"command": "kubectl apply -f prod.yaml"})
    spec = notify_settings.run_spec(
        run_id=run_id("notify"),
        argv=[*tool("approval_tool.py"), "deploy", "Deploy to prod", "--details", details],
    )
    handle = await supervisor.start_run(spec)
    await eventually(lambda: receiver.at("/hook") and receiver.at("/slack") and smtp.messages,
                     what="the requested notices")

    (hook,) = receiver.at("/hook")
    assert verify_signature(
        SECRET.encode(), hook.headers[TIMESTAMP_HEADER], hook.body, hook.headers[SIGNATURE_HEADER]
    )
    assert not verify_signature(
        b"wrong", hook.headers[TIMESTAMP_HEADER], hook.body, hook.headers[SIGNATURE_HEADER]
    )
    assert not verify_signature(
        SECRET.encode(), hook.headers[TIMESTAMP_HEADER], hook.body + b" ", hook.headers[SIGNATURE_HEADER]
    )
    replayed_at = int(hook.headers[TIMESTAMP_HEADER]) + 3600
    assert not verify_signature(
        SECRET.encode(), hook.headers[TIMESTAMP_HEADER], hook.body, hook.headers[SIGNATURE_HEADER],
        now=replayed_at,
    )
    notice = Notice.model_validate_json(hook.body)
    approval_id = f"{spec.run_id}/deploy"
    assert hook.headers[DELIVERY_HEADER] == notice.delivery_id
    assert (notice.event, notice.approval_id, notice.summary) == (
        NoticeEvent.REQUESTED, approval_id, "Deploy to prod"
    )
    assert notice.details == {"command": "kubectl apply -f prod.yaml"}
    assert notice.links.page == f"{BASE_URL}/runs/{spec.run_id}"
    assert notice.links.approve is not None and notice.links.reject is not None
    approve = signer.verify(notice.links.approve.rsplit("/", 1)[1])
    assert (approve.approval_id, approve.action, approve.approver) == (
        approval_id, LinkAction.APPROVE, "alice"
    )
    assert approve.expires_at == notice.expires_at.replace(microsecond=0)

    slack = json.loads(receiver.at("/slack")[0].body)
    assert "Deploy to prod" in slack["text"]
    buttons = {b["text"]["text"]: b for b in slack["blocks"][-1]["elements"]}
    assert set(buttons) == {"Approve", "Reject", "Open"}
    claims = signer.verify(buttons["Reject"]["url"].rsplit("/", 1)[1])
    assert (claims.approval_id, claims.action, claims.approver) == (approval_id, "reject", "alice")
    assert "kubectl apply -f prod.yaml" in json.dumps(slack["blocks"])

    (mail,) = smtp.messages
    assert "Deploy to prod" in mail["Subject"]
    body = mail.get_content()
    assert notice.links.page in body and "Approve: http://approvals.test/links/" in body

    await supervisor.decide(approval_id, approve=True, by="bob", reason="fine")
    await handle.result()
    await eventually(lambda: len(receiver.at("/hook")) == 2, what="the decided webhook")
    decided = notices(receiver, "/hook")[1]
    assert (decided.event, decided.state, decided.decided_by, decided.reason) == (
        NoticeEvent.DECIDED, ApprovalState.APPROVED, "bob", "fine"
    )
    await eventually(lambda: len(receiver.at("/slack")) == 2 and len(smtp.messages) == 2)
    assert "approved by bob" in json.loads(receiver.at("/slack")[1].body)["text"]

    # A projection handed over again (a retried local activity) sends nothing new.
    status = await handle.status()
    notifier.run_changed(RunUpdate(status=status, events=await handle.events()))
    notifier.run_changed(RunUpdate(status=status, events=await handle.events()))
    marker = Notice.model_validate_json(hook.body).model_copy(update={"delivery_id": "marker"})
    from toolwarden.notify.webhook import WebhookDelivery

    notifier.queue.submit(WebhookDelivery(f"{receiver.url}/marker", b"x", marker))
    await eventually(lambda: receiver.at("/marker"), what="the marker after the replay")
    assert hook_events(receiver) == ["approval.requested", "approval.decided"]
    assert len(receiver.at("/slack")) == 2 and len(smtp.messages) == 2


async def test_a_reminder_comes_before_expiry_then_the_expiry(
    notifier: ApprovalNotifier, notify_settings: Settings, client: Client,
    receiver: HttpReceiver, run_id: Any,
) -> None:
    supervisor = Supervisor(client, notify_settings)
    spec = notify_settings.run_spec(
        run_id=run_id("remind"),
        argv=[*tool("approval_tool.py"), "wait", "Wait a little", "--timeout", "4"],
    )
    handle = await supervisor.start_run(spec)
    await handle.result()
    await eventually(lambda: len(receiver.at("/hook")) == 3, what="requested, reminded, expired")
    got = notices(receiver, "/hook")
    assert [n.event for n in got] == [NoticeEvent.REQUESTED, NoticeEvent.REMINDED, NoticeEvent.EXPIRED]
    assert got[2].state is ApprovalState.EXPIRED
    reminded = receiver.received.index(receiver.at("/hook")[1])
    assert reminded < receiver.received.index(receiver.at("/hook")[2])


async def test_channels_hear_only_their_profiles(
    tmp_path: Path, client: Client, temporal_address: str, receiver: HttpReceiver, run_id: Any
) -> None:
    from toolwarden.config import ToolProfile

    settings = make_settings(tmp_path / "home", temporal_address)
    settings.tools = {"deployer": ToolProfile(), "linter": ToolProfile()}
    settings.notifications = NotificationSettings(
        base_url=BASE_URL,
        webhooks=[
            WebhookChannel(url=f"{receiver.url}/deploys", secret=SECRET, profiles=["deployer"]),
            WebhookChannel(url=f"{receiver.url}/all", secret=SECRET),
        ],
    )
    signer = LinkSigner(b"s" * 32, BASE_URL)
    notifier = ApprovalNotifier.start(settings, signer.notice_links)
    assert notifier is not None
    activities = ToolActivities(settings, [MetricsSink(), notifier])
    supervisor = Supervisor(client, settings)
    try:
        async with build_worker(client, settings, activities=activities):
            handles = []
            for profile in ("linter", "deployer"):
                spec = settings.run_spec(
                    run_id=run_id(profile), profile=profile,
                    argv=[*tool("approval_tool.py"), "go", f"{profile} asks", "--timeout", "0.5"],
                )
                handles.append(await supervisor.start_run(spec))
            for handle in handles:
                await handle.result()
            await eventually(lambda: len(receiver.at("/all")) == 4, what="all four notices")
            await eventually(lambda: len(receiver.at("/deploys")) == 2)
    finally:
        notifier.stop()
    assert {n.profile for n in notices(receiver, "/deploys")} == {"deployer"}
    assert {n.profile for n in notices(receiver, "/all")} == {"deployer", "linter"}
    assert all(n.links.approve is None for n in notices(receiver, "/all"))  # no approver: page only


async def test_the_worker_service_sends_notifications_from_its_own_sinks(
    tmp_path: Path, client: Client, temporal_address: str, receiver: HttpReceiver, run_id: Any
) -> None:
    import asyncio

    from toolwarden.worker.runner import WorkerService

    settings = make_settings(tmp_path / "home", temporal_address)
    settings.notifications = NotificationSettings(
        webhooks=[WebhookChannel(url=f"{receiver.url}/hook", secret=SECRET, approver="alice")]
    )
    stop = asyncio.Event()
    service = asyncio.create_task(WorkerService(settings, client).run(stop))
    try:
        spec = settings.run_spec(run_id=run_id("svc"), argv=[*tool("approval_tool.py"), "k", "Go?"])
        handle = await Supervisor(client, settings).start_run(spec)
        await eventually(lambda: receiver.at("/hook"), what="the worker's own notifier")
        notice = notices(receiver, "/hook")[0]
        assert notice.approval_id == f"{spec.run_id}/k" and notice.links.approve is not None
        assert (settings.home / "link-signing.key").exists()
        await handle.cancel()
        await handle.result()
    finally:
        stop.set()
        await service


async def test_an_unreadable_webhook_secret_stops_the_worker_with_one_line(
    tmp_path: Path, client: Client, temporal_address: str
) -> None:
    import asyncio

    from toolwarden.config import ConfigError
    from toolwarden.worker.runner import WorkerService

    settings = make_settings(tmp_path / "home", temporal_address)
    settings.notifications = NotificationSettings(
        webhooks=[WebhookChannel(url="http://127.0.0.1:9/hook", secret_file=tmp_path / "missing")]
    )
    with pytest.raises(ConfigError, match=r"^notifications: .*missing"):
        await WorkerService(settings, client).run(asyncio.Event())
