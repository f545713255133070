"""`/healthz`, `/readyz` and `/metrics`, and the readiness report they share with the CLI.

* `GET /healthz` -> 200 `{"status": "ok"}` while the process (and its event loop) lives.
* `GET /readyz` -> 200 when ready, else 503; the body is the `Readiness` JSON either way.
  Ready means connected to Temporal and polling the task queue; a degraded mirror stays ready.
* `GET /metrics` -> `toolwarden.metrics.REGISTRY` in the Prometheus text format, followed by
  the Temporal SDK's runtime metrics when `sdk_metrics_address` is given.

The SDK serves its own metrics (Rust core) on a second address (see `connect_client`), and
`/metrics` fetches `http://{sdk_metrics_address}/metrics` on every scrape and appends it, so one
scrape target carries both. When that fetch fails, the page still answers,
`toolwarden_sdk_metrics_up` is 0 and a comment says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from toolwarden import metrics
from toolwarden.errors import one_line
from toolwarden.http.address import http_url


class Readiness(BaseModel):
    """What `/readyz` answers and `toolwarden health` prints."""

    ready: bool
    temporal: str  # "connected" or "unreachable: <why>"
    polling: bool
    task_queue: str
    mirror: str  # "ok", "degraded: <why>" or "disabled"
    mirror_backlog: int | None = None
    mirror_lag_seconds: float | None = None
    running_tools: int = 0

    def problems(self) -> list[str]:
        """Why the worker is not ready or degraded, one short phrase each."""
        found: list[str] = []
        if self.temporal != "connected":
            found.append(f"temporal {self.temporal}")
        if not self.polling:
            found.append(f"not polling task queue {self.task_queue!r}")
        if self.mirror not in ("ok", "disabled"):
            found.append(f"mirror {self.mirror}")
        return found


ReadinessProbe = Callable[[], Awaitable[Readiness]]


def describe_error(exc: BaseException) -> str:
    """A failed request in a few words: `timed out`, `connection refused`, or the error."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "did not answer with HTTP"
    return one_line(exc)


class HealthChecks:
    """The readiness probe (bounded in time) and the metrics page built on it."""

    def __init__(
        self,
        readiness: ReadinessProbe,
        sdk_metrics_address: str | None = None,
        *,
        readiness_timeout: float = 5.0,
        sdk_timeout: float = 3.0,
    ) -> None:
        self._readiness = readiness
        self._sdk_address = sdk_metrics_address
        self._readiness_timeout = readiness_timeout
        self._sdk_timeout = sdk_timeout

    async def check(self) -> Readiness:
        """Run the readiness probe; a failing or hanging probe means not ready."""
        try:
            async with asyncio.timeout(self._readiness_timeout):
                report = await self._readiness()
        except Exception as exc:  # the probe is someone else's code: report, don't crash
            why = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            report = Readiness(
                ready=False,
                temporal=f"unknown: readiness check failed: {why}",
                polling=False,
                task_queue="unknown",
                mirror="unknown",
            )
        metrics.set_ready(report.ready)
        if report.mirror_backlog is not None:
            metrics.set_mirror(report.mirror_backlog, report.mirror_lag_seconds)
        return report

    async def scrape(self) -> bytes:
        """toolwarden's metrics, then the SDK's (fetched concurrently with the readiness probe)."""
        sdk_task = asyncio.create_task(self._fetch_sdk()) if self._sdk_address else None
        await self.check()
        sdk_text = b""
        if sdk_task is not None:
            ok, sdk_text = await sdk_task
            metrics.set_sdk_metrics_up(ok)
        page = metrics.render()
        if sdk_text and not sdk_text.endswith(b"\n"):
            sdk_text += b"\n"
        return page + sdk_text

    async def _fetch_sdk(self) -> tuple[bool, bytes]:
        assert self._sdk_address is not None
        try:
            async with httpx.AsyncClient(timeout=self._sdk_timeout) as client:
                answer = await client.get(http_url(self._sdk_address, "/metrics"))
            if answer.status_code != 200:
                raise ValueError(f"HTTP {answer.status_code}")
        except Exception as exc:
            note = (
                "# toolwarden: Temporal SDK metrics unavailable from "
                f"{self._sdk_address}: {describe_error(exc)}\n"
            )
            return False, note.encode("utf-8", "replace")
        body = answer.content
        if body.rstrip().endswith(b"# EOF"):
            body = body.rstrip()[: -len(b"# EOF")]
        return True, body


def _checks(request: Request) -> HealthChecks:
    checks: HealthChecks = request.app.state.services.health
    return checks


Checks = Annotated[HealthChecks, Depends(_checks)]
_NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter(include_in_schema=False)


@router.api_route("/healthz", methods=["GET", "HEAD"])
async def healthz() -> Response:
    return Response(b'{"status": "ok"}', media_type="application/json", headers=_NO_STORE)


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(checks: Checks) -> Response:
    report = await checks.check()
    return Response(
        report.model_dump_json(),
        status_code=200 if report.ready else 503,
        media_type="application/json",
        headers=_NO_STORE,
    )


@router.api_route("/metrics", methods=["GET", "HEAD"])
async def metrics_page(checks: Checks) -> Response:
    return Response(await checks.scrape(), media_type=metrics.CONTENT_TYPE, headers=_NO_STORE)


async def fetch_readiness(address: str, timeout: float) -> Readiness:
    """Ask the worker at `address` for its readiness report (a 503 still carries one).

    Raises httpx.HTTPError or OSError when nobody answers, ValueError for a foreign answer.
    """
    from pydantic import ValidationError

    async with httpx.AsyncClient(timeout=timeout) as client:
        answer = await client.get(http_url(address, "/readyz"))
    if answer.status_code not in (200, 503):
        raise ValueError(f"unexpected HTTP {answer.status_code} from /readyz")
    try:
        return Readiness.model_validate_json(answer.content)
    except ValidationError as exc:
        raise ValueError("the answer from /readyz is not a toolwarden readiness report") from exc
