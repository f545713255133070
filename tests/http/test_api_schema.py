"""Schemathesis against the API's own OpenAPI document, over real HTTP to a real worker's app.

Bounded: a fixed number of derandomized examples per operation, and a time limit for the whole.
Checked: no 5xx, every status documented, and every body matching its documented schema.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client

from tests.http.serving import report
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.http.app import HttpServer, create_app
from toolwarden.http.health import HealthChecks, Readiness
from toolwarden.http.services import HttpServices
from toolwarden.http.tokens import TokenStore

EXAMPLES_PER_OPERATION = 25
TIME_LIMIT_S = 240.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]


async def _ready() -> Readiness:
    return report()


@pytest.fixture
async def server(settings: Settings, client: Client) -> AsyncIterator[HttpServer]:
    services = HttpServices(
        settings=settings,
        health=HealthChecks(_ready),
        tokens=TokenStore(settings.tokens_file),
        supervisor=Supervisor(client, settings),
    )
    async with HttpServer(create_app(services), "127.0.0.1:0") as srv:
        yield srv


def fuzz(base_url: str, token: str) -> list[str]:
    """Run every operation's examples (in this thread: the server runs on the test's loop)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json", timeout=30)
    deadline = time.monotonic() + TIME_LIMIT_S
    tried: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if time.monotonic() > deadline:
            raise AssertionError(f"time limit reached after {tried}")

        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(
                base_url=base_url,
                headers={"Authorization": f"Bearer {token}"},
                checks=CHECKS,
                timeout=30,
            )

        check()
        tried.append(operation.label)
    assert calls >= 5 * len(tried), (calls, tried)
    return tried


async def test_the_api_keeps_to_its_schema(server: HttpServer, settings: Settings) -> None:
    token = TokenStore(settings.tokens_file).create("fuzzer")
    tried = await asyncio.to_thread(fuzz, server.url, token)
    assert len(tried) >= 8, tried  # every operation of the API was exercised
