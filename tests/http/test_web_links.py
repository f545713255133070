"""Signed decision links on the real page: GET changes nothing, POST decides once as the link's
approver; reused, tampered, expired and already-decided links are refused."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.conftest import make_settings
from tests.http.test_web import ask, decision_line
from tests.http.webpage import WebServer, csrf_of, serve_web
from tests.notify.receivers import HttpReceiver
from tests.support import eventually
from toolwarden.activities.tool_run import ToolActivities
from toolwarden.config import ApprovalSettings, NotificationSettings, WebhookChannel
from toolwarden.http.links import LinkAction
from toolwarden.metrics import MetricsSink
from toolwarden.models import ApprovalRecord, ApprovalState
from toolwarden.notify import ApprovalNotifier, Notice, NoticeEvent, NoticeLinks
from toolwarden.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


@pytest.fixture
async def web(client: Client, tmp_path: Path, temporal_address: str) -> AsyncIterator[WebServer]:
    settings = make_settings(tmp_path / "home", temporal_address)
    async with serve_web(client, settings) as server:
        yield server


async def test_get_changes_nothing_and_the_post_decides_once_as_the_links_approver(
    web: WebServer, run_id: Any
) -> None:
    handle = await ask(web, run_id, {"command": "terraform apply"})
    record = (await handle.status()).approvals[0]
    signer = web.signer()
    approve = signer.link(record.approval_id, LinkAction.APPROVE, "alice", record.expires_at)
    reject = signer.link(record.approval_id, LinkAction.REJECT, "alice", record.expires_at)
    async with httpx.AsyncClient(timeout=30) as scanner:  # no cookie: links need no sign-in
        for _ in range(3):  # a mail scanner fetching it, then a person opening it twice
            page = await scanner.get(approve)
            assert page.status_code == 200
            assert "Approve as alice" in page.text and "terraform apply" in page.text
        assert (await handle.status()).approvals[0].state is ApprovalState.PENDING
        csrf = csrf_of(page.text)
        assert (await scanner.post(approve, data={"csrf": "forged"})).status_code == 400
        done = await scanner.post(approve, data={"csrf": csrf, "reason": "from mail",
                                                 "response": '{"ok": true}'})
        assert done.status_code == 200, done.text
        assert f"{record.approval_id} approved by alice" in done.text
        await handle.result()
        status = await handle.status()
        assert decision_line(status)["response"] == {"ok": True}
        assert [(e.kind, e.by) for e in status.audit] == [("decision_approved", "alice")]

        reused = await scanner.post(approve, data={"csrf": csrf})
        assert reused.status_code == 410 and "already used" in reused.text
        assert (await scanner.get(approve)).status_code == 410
        other = await scanner.get(reject)  # a second link for the decided approval
        assert other.status_code == 409
        assert "already approved by alice" in html.unescape(other.text)
        refused = await scanner.post(reject, data={"csrf": csrf_of(page.text)})
        assert refused.status_code in (400, 409)
    assert (await handle.status()).approvals[0].state is ApprovalState.APPROVED


async def test_tampered_and_expired_links_are_refused(web: WebServer, run_id: Any) -> None:
    handle = await ask(web, run_id)
    record = (await handle.status()).approvals[0]
    signer = web.signer()
    link = signer.link(record.approval_id, LinkAction.APPROVE, "alice", record.expires_at)
    base, token = link.rsplit("/", 1)
    payload, mac = token.split(".")
    expired = signer.link(record.approval_id, LinkAction.APPROVE, "alice",
                          datetime.now(UTC) - timedelta(seconds=1))
    async with httpx.AsyncClient(timeout=30) as browser:
        tampered = f"{base}/{payload}.{mac[:-3]}AAA"
        for url in (tampered, f"{base}/{payload}", f"{base}/garbage"):
            assert (await browser.get(url)).status_code == 400
            assert (await browser.post(url, data={"csrf": "x"})).status_code == 400
        got = await browser.get(expired)
        assert got.status_code == 410 and "expired" in got.text
    assert (await handle.status()).approvals[0].state is ApprovalState.PENDING
    await handle.cancel()


async def test_a_link_issued_to_someone_not_allowed_is_refused(
    client: Client, tmp_path: Path, temporal_address: str, run_id: Any
) -> None:
    settings = make_settings(
        tmp_path / "home", temporal_address, approvals=ApprovalSettings(approvers=["alice"])
    )
    async with serve_web(client, settings) as web:
        handle = await ask(web, run_id)
        record = (await handle.status()).approvals[0]
        link = web.signer().link(record.approval_id, LinkAction.APPROVE, "mallory", record.expires_at)
        async with httpx.AsyncClient(timeout=30) as browser:
            page = await browser.get(link)
            answer = await browser.post(link, data={"csrf": csrf_of(page.text)})
            assert answer.status_code == 403 and "mallory is not an allowed approver" in answer.text
        assert (await handle.status()).approvals[0].state is ApprovalState.PENDING
        await handle.cancel()


async def test_a_webhooks_signed_link_opened_and_confirmed_decides_the_approval(
    client: Client, tmp_path: Path, temporal_address: str, run_id: Any
) -> None:
    """The issue's "done when": a receiver gets a signed `requested` event whose link decides."""
    receiver = HttpReceiver().start()
    settings = make_settings(tmp_path / "home", temporal_address)
    settings.notifications = NotificationSettings(
        webhooks=[WebhookChannel(url=f"{receiver.url}/hook", secret="s3cret", approver="alice")]
    )
    notifier: ApprovalNotifier | None = None

    def links(record: ApprovalRecord, approver: str | None) -> NoticeLinks:
        return web.signer().notice_links(record, approver)

    notifier = ApprovalNotifier.start(settings, links)
    assert notifier is not None
    activities = ToolActivities(settings, [MetricsSink(), notifier])
    try:
        async with serve_web(client, settings, activities) as web:
            handle = await ask(web, run_id)
            await eventually(lambda: receiver.at("/hook"), what="the requested webhook")
            hook = receiver.at("/hook")[0]
            assert verify_signature(b"s3cret", hook.headers[TIMESTAMP_HEADER], hook.body,
                                    hook.headers[SIGNATURE_HEADER])
            notice = Notice.model_validate_json(hook.body)
            assert notice.event is NoticeEvent.REQUESTED and notice.links.approve is not None
            assert notice.links.approve.startswith(f"{web.url}/links/")
            async with httpx.AsyncClient(timeout=30) as person:
                page = await person.get(notice.links.approve)
                assert page.status_code == 200
                done = await person.post(notice.links.approve, data={"csrf": csrf_of(page.text)})
                assert done.status_code == 200, done.text
            await handle.result()
            status = await handle.status()
            assert [(e.kind, e.by) for e in status.audit] == [("decision_approved", "alice")]
            await eventually(lambda: len(receiver.at("/hook")) == 2, what="the decided webhook")
            assert Notice.model_validate_json(receiver.at("/hook")[1].body).decided_by == "alice"
    finally:
        notifier.stop()
        receiver.stop()
