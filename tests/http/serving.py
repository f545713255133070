"""A real HTTP server (the worker's app on uvicorn) with a readiness probe the test controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from toolwarden.config import Settings
from toolwarden.http.address import http_url
from toolwarden.http.app import HttpServer, create_app
from toolwarden.http.health import HealthChecks, Readiness, ReadinessProbe
from toolwarden.http.services import HttpServices
from toolwarden.http.tokens import TokenStore


def report(
    *,
    temporal: str = "connected",
    polling: bool = True,
    task_queue: str = "toolwarden",
    **fields: object,
) -> Readiness:
    """A readiness report whose `ready` follows the worker's rule: connected and polling."""
    return Readiness.model_validate(
        {
            "ready": temporal == "connected" and polling,
            "temporal": temporal,
            "polling": polling,
            "task_queue": task_queue,
            "mirror": "disabled",
            **fields,
        }
    )


def health_server(
    probe: ReadinessProbe,
    address: str = "127.0.0.1:0",
    *,
    sdk_metrics_address: str | None = None,
    readiness_timeout: float = 5.0,
    sdk_timeout: float = 3.0,
) -> HttpServer:
    """The worker's HTTP app without a Temporal client (health and metrics only), unstarted."""
    services = HttpServices(
        settings=Settings(),
        health=HealthChecks(
            probe,
            sdk_metrics_address,
            readiness_timeout=readiness_timeout,
            sdk_timeout=sdk_timeout,
        ),
        tokens=TokenStore(Path("/nonexistent/toolwarden-tokens.json")),
    )
    return HttpServer(create_app(services), address)


@asynccontextmanager
async def serve_health(
    probe: ReadinessProbe, address: str = "127.0.0.1:0", **options: Any
) -> AsyncIterator[HttpServer]:
    async with health_server(probe, address, **options) as server:
        yield server


async def http_get(address: str, path: str, timeout: float) -> httpx.Response:
    """GET `http://ADDRESS{path}` with a fresh client (a new connection every time)."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.get(http_url(address, path))
