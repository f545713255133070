"""The approvals page over real HTTP: sign-in, inbox, decisions, refusals, runs and run pages.

A real worker runs the real tools; the page is the real app served by uvicorn (the browser
test is tests/http/test_web_browser.py, the signed links tests/http/test_web_links.py).
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.conftest import make_settings
from tests.http.webpage import WebServer, csrf_of, serve_web
from tests.support import eventually, tool
from toolwarden.client import RunHandle
from toolwarden.config import ApprovalSettings
from toolwarden.models import ApprovalState, RunStatus


@pytest.fixture
async def web(client: Client, tmp_path: Path, temporal_address: str) -> AsyncIterator[WebServer]:
    settings = make_settings(tmp_path / "home", temporal_address)
    async with serve_web(client, settings) as server:
        yield server


async def ask(
    web: WebServer, run_id: Any, details: dict[str, Any] | None = None, name: str = "deployer"
) -> RunHandle:
    argv = [*tool("approval_tool.py"), "deploy", "Deploy to prod"]
    if details is not None:
        argv += ["--details", json.dumps(details)]
    spec = web.settings.run_spec(run_id=run_id(name), argv=argv, name=name)
    handle = await web.supervisor.start_run(spec)

    async def pending() -> bool:
        return bool((await handle.status()).pending_approvals)

    await eventually(pending, what="the approval to be pending")
    return handle


def decision_line(status: RunStatus) -> dict[str, Any]:
    assert status.last_attempt is not None
    line = next(t for t in status.last_attempt.tail if t.startswith("DECISION "))
    return json.loads(line.removeprefix("DECISION "))  # type: ignore[no-any-return]


async def test_pages_redirect_to_sign_in_and_a_bad_token_is_refused(web: WebServer) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=60) as anonymous:
        for path in ("/", "/runs", "/runs/some-run"):
            answer = await anonymous.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/signin?next=")
        form = await anonymous.get("/signin")
        assert form.status_code == 200 and 'type="password"' in form.text
        refused = await anonymous.post("/signin", data={"token": "tw_nope", "csrf": csrf_of(form.text)})
        assert refused.status_code == 401 and "not valid" in refused.text
        no_csrf = await anonymous.post("/signin", data={"token": web.tokens.create("alice")})
        assert no_csrf.status_code == 400
        assert "toolwarden_token" not in no_csrf.headers.get("set-cookie", "")


async def test_the_session_cookie_is_httponly_and_samesite_strict(web: WebServer) -> None:
    token = web.tokens.create("alice")
    async with httpx.AsyncClient(base_url=web.url, timeout=60) as browser:
        form = await browser.get("/signin")
        answer = await browser.post(
            "/signin", data={"token": token, "csrf": csrf_of(form.text), "next": "https://evil.example/"}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("toolwarden_token="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        page = await browser.get("/")
        assert page.status_code == 200 and "signed in as <strong>alice</strong>" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and page.headers["referrer-policy"] == "no-referrer"


async def test_the_inbox_shows_the_request_and_approving_reaches_the_tool(
    web: WebServer, run_id: Any
) -> None:
    diff = "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-old = 1\n+new = 2"
    handle = await ask(web, run_id, {"command": ["kubectl", "apply", "-f", "prod.yaml"], "diff": diff})
    async with web.signed_in("alice") as browser:
        page = await browser.get("/")
        text = html.unescape(page.text)
        assert "Deploy to prod" in text and handle.run_id in text
        assert "kubectl apply -f prod.yaml" in text  # the command, in full
        assert "+new = 2" in text and 'class="diff-add"' in page.text
        assert '"command": [' in text  # the details as formatted JSON
        assert "Expires in" in text
        approval = f"{handle.run_id}/deploy"

        forged = await browser.post(f"/approvals/{approval}", data={"action": "approve", "csrf": "x"})
        assert forged.status_code == 400
        bad_json = await browser.post(
            f"/approvals/{approval}",
            data={"action": "approve", "csrf": csrf_of(page.text), "response": "{not json"},
        )
        assert bad_json.status_code == 422 and "not valid JSON" in bad_json.text
        assert (await handle.status()).pending_approvals  # refusals changed nothing

        done = await browser.post(
            f"/approvals/{approval}",
            data={"action": "approve", "csrf": csrf_of(page.text), "reason": "looks right",
                  "response": '{"branch": "main"}'},
        )
        assert done.status_code == 200, done.text
        assert f"{approval} approved by alice" in done.text
        await handle.result()
        status = await handle.status()
        decision = decision_line(status)
        assert (decision["by"], decision["response"], decision["reason"]) == (
            "alice", {"branch": "main"}, "looks right"
        )
        assert [(e.kind, e.by) for e in status.audit] == [("decision_approved", "alice")]

        again = await browser.post(
            f"/approvals/{approval}", data={"action": "reject", "csrf": csrf_of(page.text)}
        )
        assert again.status_code == 409 and "already approved by alice" in html.unescape(again.text)

        run_page = await browser.get(f"/runs/{handle.run_id}")
        text = html.unescape(run_page.text)
        assert run_page.status_code == 200
        assert "succeeded" in text and "decision_approved" in text and "DECISION" in text
        assert "the log files on" in text  # this worker ran it: the tail is read from its files
        assert "Attempts" in text and "<th scope=\"row\">1</th>" in run_page.text
        runs = await browser.get("/runs")
        assert handle.run_id in runs.text
        partial = await browser.get("/runs", params={"partial": "1"})
        assert "<html" not in partial.text and handle.run_id in partial.text


async def test_an_approver_not_on_the_allowlist_is_refused_and_nothing_changes(
    client: Client, tmp_path: Path, temporal_address: str, run_id: Any
) -> None:
    settings = make_settings(
        tmp_path / "home", temporal_address, approvals=ApprovalSettings(approvers=["alice"])
    )
    async with serve_web(client, settings) as web:
        handle = await ask(web, run_id)
        async with web.signed_in("bob") as browser:
            page = await browser.get("/")
            refused = await browser.post(
                f"/approvals/{handle.run_id}/deploy",
                data={"action": "approve", "csrf": csrf_of(page.text)},
            )
            assert refused.status_code == 403, refused.text
            assert "bob is not an allowed approver" in refused.text
        status = await handle.status()
        assert status.approvals[0].state is ApprovalState.PENDING
        await handle.cancel()


async def test_unknown_runs_and_static_files(web: WebServer) -> None:
    async with web.signed_in("alice") as browser:
        assert (await browser.get("/runs/no-such-run")).status_code == 404
        css = await browser.get("/static/style.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        js = await browser.get("/static/live.js")
        assert js.status_code == 200 and "partial" in js.text
        assert (await browser.get("/static/../web.py")).status_code == 404
        assert (await browser.get("/static/web.py")).status_code == 404
