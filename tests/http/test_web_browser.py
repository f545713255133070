"""The approvals page in a real browser: Debian's chromium driven by Playwright.

Sign in with a token, see the approval, approve it with a response, and the tool continues
with that response; the page updates by itself and says so when the worker is gone. The
inbox screenshot of docs/web.md comes from here: set UPDATE_DOCS_SCREENSHOTS=1 to refresh
docs/images/web-inbox.png.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.client import Client

from tests.conftest import make_settings
from tests.http.test_web import ask, decision_line
from tests.http.webpage import serve_web
from tests.support import REPO, tool

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(page: Page, url: str, token: str) -> None:
    await page.goto(url + "/")
    await expect(page).to_have_url(f"{url}/signin?next=%2F")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Approvals waiting")).to_be_visible()


async def test_sign_in_see_approve_and_the_tool_gets_the_response(
    browser: Browser, client: Client, tmp_path: Path, temporal_address: str, run_id: Any
) -> None:
    settings = make_settings(tmp_path / "home", temporal_address)
    async with serve_web(client, settings) as web:
        diff = "--- a/deploy.yaml\n+++ b/deploy.yaml\n@@ -3 +3 @@\n-replicas: 2\n+replicas: 4"
        handle = await ask(web, run_id, {"command": "kubectl apply -f deploy.yaml", "diff": diff,
                                         "cluster": "prod-eu", "replicas": 4})
        page = await browser.new_page(viewport={"width": 1100, "height": 900})
        await sign_in(page, web.url, web.tokens.create("alice"))
        card = page.get_by_role("listitem").filter(has_text="Deploy to prod")
        await expect(card).to_be_visible()
        await expect(card.get_by_label("command")).to_have_text("kubectl apply -f deploy.yaml")
        await expect(card.locator(".diff-add")).to_have_text("+replicas: 4")
        shot = await page.screenshot(full_page=True)
        (tmp_path / "web-inbox.png").write_bytes(shot)
        if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
            (REPO / "docs" / "images" / "web-inbox.png").write_bytes(shot)

        await card.get_by_label("Reason").fill("ship it")
        await card.get_by_label("Response").fill('{"branch": "main"}')
        await card.get_by_role("button", name="Approve").click()
        await expect(page.locator("#outcome")).to_contain_text(f"{handle.run_id}/deploy approved by alice")
        await handle.result()
        decision = decision_line(await handle.status())
        assert (decision["by"], decision["response"]) == ("alice", {"branch": "main"})

        await page.get_by_role("link", name=f"Run {handle.run_id}").click()
        await expect(page.get_by_text("decision_approved")).to_be_visible()
        await expect(page.locator("pre.log")).to_contain_text("DECISION")


async def test_the_inbox_updates_by_itself_fits_a_phone_and_says_when_the_worker_is_gone(
    browser: Browser, client: Client, tmp_path: Path, temporal_address: str, run_id: Any
) -> None:
    settings = make_settings(tmp_path / "home", temporal_address)
    page = await browser.new_page(viewport={"width": 375, "height": 740})
    async with serve_web(client, settings) as web:
        await sign_in(page, web.url, web.tokens.create("alice"))
        await expect(page.get_by_text("Nothing waits for a decision")).to_be_visible()
        spec = settings.run_spec(run_id=run_id("live"), argv=[*tool("approval_tool.py"), "go",
                                 "Rotate the keys", "--details", json.dumps({"keys": 3})])
        handle = await web.supervisor.start_run(spec)
        card = page.get_by_role("listitem").filter(has_text="Rotate the keys")
        await expect(card).to_be_visible(timeout=30_000)  # no reload: the poll brought it
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
        approve = card.get_by_role("button", name="Approve")
        box = await approve.bounding_box()
        assert box is not None and box["height"] >= 40  # a thumb-sized target
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        await handle.cancel()
    # The server is gone with the worker: the next poll fails and the page says so.
    await expect(page.locator("#connection")).to_contain_text("not answering", timeout=30_000)
