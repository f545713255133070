"""A real worker with the real HTTP app (page, API, links) on a free port, for the web tests."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from temporalio.client import Client

from tests.http.serving import report
from tests.support import end_open_runs
from toolwarden.activities.tool_run import ToolActivities
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.http.app import HttpServer, create_app
from toolwarden.http.health import HealthChecks, Readiness
from toolwarden.http.links import LinkSigner, load_or_create_key
from toolwarden.http.services import HttpServices
from toolwarden.http.tokens import TokenStore
from toolwarden.worker.runner import build_worker

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class WebServer:
    url: str
    settings: Settings
    supervisor: Supervisor
    tokens: TokenStore

    def signer(self) -> LinkSigner:
        """A signer with the worker host's key, as the notifications use it."""
        return LinkSigner(load_or_create_key(self.settings.link_key_file), self.url)

    @contextlib.asynccontextmanager
    async def signed_in(self, name: str) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client that signed in through the page's own form, as a browser does."""
        token = self.tokens.create(name)
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as browser:
            form = await browser.get("/signin")
            csrf = csrf_of(form.text)
            answer = await browser.post("/signin", data={"token": token, "csrf": csrf, "next": "/"})
            assert answer.status_code == 303, answer.text
            yield browser


def csrf_of(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@contextlib.asynccontextmanager
async def serve_web(
    client: Client, settings: Settings, activities: ToolActivities | None = None
) -> AsyncIterator[WebServer]:
    supervisor = Supervisor(client, settings)
    tokens = TokenStore(settings.home / "tokens.json")

    async def readiness() -> Readiness:
        return report(task_queue=settings.temporal.task_queue)

    services = HttpServices(
        settings=settings, health=HealthChecks(readiness), tokens=tokens, supervisor=supervisor
    )
    async with (
        build_worker(client, settings, activities=activities),
        HttpServer(create_app(services), "127.0.0.1:0") as server,
    ):
        # Links in notifications name the page as browsers reach it: here, the test's port.
        settings.notifications.base_url = server.url
        yield WebServer(server.url, settings, supervisor, tokens)
    await end_open_runs(client, settings.temporal.task_queue)
