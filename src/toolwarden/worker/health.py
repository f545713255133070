"""The worker's health endpoint: `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1.

A deliberately tiny server on `asyncio.start_server` (no new dependency): every response closes
the connection, only GET and HEAD are served, request lines and headers are size- and
time-limited, and a bad request gets a 4xx without disturbing the worker.

* `GET /healthz` -> 200 `{"status": "ok"}` while the process (and its event loop) lives.
* `GET /readyz` -> 200 when ready, else 503; the body is the `Readiness` JSON either way.
  Ready means connected to Temporal and polling the task queue; a degraded mirror stays ready.
* `GET /metrics` -> `toolwarden.metrics.REGISTRY` in the Prometheus text format, followed by
  the Temporal SDK's runtime metrics when `sdk_metrics_address` is given.

The SDK serves its own metrics (Rust core) on a second address, configured on the runtime the
worker's client is created with; `sdk_runtime()` below builds that runtime::

    runtime = sdk_runtime(settings.worker.sdk_metrics_address)
    client = await Client.connect(address, namespace=..., runtime=runtime)

and `/metrics` fetches `http://{sdk_metrics_address}/metrics` on every scrape (asynchronously,
with a short timeout) and appends it, so one scrape target carries both. When that fetch
fails, the page still answers, `toolwarden_sdk_metrics_up` is 0 and a comment says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from toolwarden import metrics

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

log = logging.getLogger(__name__)

_LINE_LIMIT = 8 * 1024
_MAX_HEADERS = 100
_REQUEST_TIMEOUT_S = 10.0
_MAX_SDK_BODY = 32 * 1024 * 1024
_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}


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

    @classmethod
    def assess(
        cls,
        *,
        temporal: str,
        polling: bool,
        task_queue: str,
        mirror: str = "disabled",
        mirror_backlog: int | None = None,
        mirror_lag_seconds: float | None = None,
        running_tools: int = 0,
    ) -> Readiness:
        """Build a report with `ready` derived by the rule: connected and polling."""
        return cls(
            ready=temporal == "connected" and polling,
            temporal=temporal,
            polling=polling,
            task_queue=task_queue,
            mirror=mirror,
            mirror_backlog=mirror_backlog,
            mirror_lag_seconds=mirror_lag_seconds,
            running_tools=running_tools,
        )

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


def parse_address(address: str) -> tuple[str, int]:
    """Split `HOST:PORT` (`[v6]:PORT` for IPv6; an empty host means every interface)."""
    text = address.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    bare_v6 = ":" in host and not text.startswith("[")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or bare_v6:
        raise ValueError(f"invalid address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, int(port)


def client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


class HttpAnswer(BaseModel):
    status: int
    headers: dict[str, str]
    body: bytes


async def http_get(address: str, path: str, timeout: float) -> HttpAnswer:
    """GET `http://ADDRESS{path}` with asyncio streams; raise OSError/TimeoutError/ValueError."""
    host, port = parse_address(address)
    host = client_host(host)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=_LINE_LIMIT * 8)
        try:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            writer.write(
                f"GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain, "
                "application/json\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            await writer.drain()
            raw = await reader.read(_MAX_SDK_BODY + 1)
            while True:
                more = await reader.read(_MAX_SDK_BODY + 1)
                if not more:
                    break
                raw += more
                if len(raw) > _MAX_SDK_BODY:
                    raise ValueError(f"answer from {address} larger than {_MAX_SDK_BODY} bytes")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"{address} did not answer with HTTP")
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/") or not (
        status_parts[1].isdigit()
    ):
        raise ValueError(f"{address} did not answer with HTTP")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return HttpAnswer(status=int(status_parts[1]), headers=headers, body=body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            raise ValueError("truncated chunked body")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += rest[:size]
        data = rest[size + 2 :]


def sdk_runtime(sdk_metrics_address: str) -> Runtime:
    """A Temporal runtime whose Rust core serves Prometheus metrics on `sdk_metrics_address`.

    Counters get `_total` and durations are in seconds, like toolwarden's own metrics.
    """
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=sdk_metrics_address,
                counters_total_suffix=True,
                durations_as_seconds=True,
            )
        )
    )


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HealthServer:
    """Serves `/healthz`, `/readyz` and `/metrics` on `address` (`HOST:PORT`, port may be 0)."""

    def __init__(
        self,
        address: str,
        readiness: ReadinessProbe,
        sdk_metrics_address: str | None = None,
        *,
        readiness_timeout: float = 5.0,
        sdk_timeout: float = 3.0,
    ) -> None:
        self._host, self._port = parse_address(address)
        self.address = address
        self._readiness = readiness
        self._sdk_address = sdk_metrics_address
        self._readiness_timeout = readiness_timeout
        self._sdk_timeout = sdk_timeout
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when `address` asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = client_host(self._host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._on_connection, self._host or None, self._port, limit=_LINE_LIMIT,
            reuse_address=True,
        )
        log.info("health endpoint listening on %s", self.url)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- connections -------------------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # never let one request disturb the worker
            log.exception("health endpoint: unexpected error")
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                method, path = await self._read_request(reader)
            head_only = method == "HEAD"
            status, content_type, body, extra = await self._route(method, path)
        except _BadRequest as exc:
            status, content_type, extra = exc.status, "application/json", {}
            body = _json({"error": str(exc)})
        except TimeoutError:
            status, content_type, extra = 408, "application/json", {}
            body = _json({"error": "request not received in time"})
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in extra.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise _BadRequest(400, "request line too long") from exc
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target = parts[0], parts[1]
        for _ in range(_MAX_HEADERS):
            try:
                header = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                raise _BadRequest(431, "header line too long") from exc
            if header in (b"\r\n", b"\n"):
                break
        else:
            raise _BadRequest(431, "too many header lines")
        if target.startswith(("http://", "https://")):
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        return method, target.split("?", 1)[0].split("#", 1)[0]

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes, dict[str, str]]:
        if path not in ("/healthz", "/readyz", "/metrics"):
            return 404, "application/json", _json({"error": f"no such path: {path}"}), {}
        if method not in ("GET", "HEAD"):
            return 405, "application/json", _json({"error": "use GET"}), {"Allow": "GET, HEAD"}
        if path == "/healthz":
            return 200, "application/json", _json({"status": "ok"}), {}
        if path == "/readyz":
            report = await self.check()
            return (200 if report.ready else 503), "application/json", (
                report.model_dump_json().encode()
            ), {}
        return 200, metrics.CONTENT_TYPE, await self.scrape(), {}

    # -- the two things it knows how to do -------------------------------------------------------

    async def check(self) -> Readiness:
        """Run the readiness probe (bounded in time); a failing probe means not ready."""
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
            answer = await http_get(self._sdk_address, "/metrics", self._sdk_timeout)
            if answer.status != 200:
                raise ValueError(f"HTTP {answer.status}")
        except Exception as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            why = " ".join(why.split())
            note = (
                f"# toolwarden: Temporal SDK metrics unavailable from {self._sdk_address}: {why}\n"
            )
            return False, note.encode("utf-8", "replace")
        body = answer.body
        if body.rstrip().endswith(b"# EOF"):
            body = body.rstrip()[: -len(b"# EOF")]
        return True, body


def _json(data: object) -> bytes:
    return json.dumps(data).encode()
