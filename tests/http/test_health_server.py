"""The worker's health endpoint over real loopback HTTP, with a readiness probe we control."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tests.http.serving import health_server, http_get, report, serve_health
from tests.support import eventually, free_port
from toolwarden import metrics
from toolwarden.http.address import client_host, parse_address
from toolwarden.http.app import HttpServer
from toolwarden.http.health import Readiness


class Probe:
    """A readiness probe whose answer the test changes."""

    def __init__(self) -> None:
        self.temporal = "connected"
        self.polling = True
        self.mirror = "ok"
        self.calls = 0
        self.error: Exception | None = None
        self.hang = False

    async def __call__(self) -> Readiness:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.Event().wait()
        return report(
            temporal=self.temporal,
            polling=self.polling,
            task_queue="toolwarden-test",
            mirror=self.mirror,
            mirror_backlog=3,
            mirror_lag_seconds=0.5,
            running_tools=2,
        )


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def server(probe: Probe) -> AsyncIterator[HttpServer]:
    async with serve_health(probe, readiness_timeout=0.5) as srv:
        yield srv


def addr(server: HttpServer) -> str:
    return f"127.0.0.1:{server.port}"


async def raw_request(server: HttpServer, data: bytes, *, close_write: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    if close_write:
        writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), timeout=15)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_port_zero_binds_a_real_port_and_stop_closes_it(probe: Probe) -> None:
    srv = health_server(probe)
    await srv.start()
    port = srv.port
    assert port > 0
    assert (await http_get(f"127.0.0.1:{port}", "/healthz", 5)).status_code == 200
    await srv.stop()
    with pytest.raises(httpx.ConnectError):
        await http_get(f"127.0.0.1:{port}", "/healthz", 5)
    await srv.stop()  # idempotent


async def test_healthz_answers_ok(server: HttpServer) -> None:
    answer = await http_get(addr(server), "/healthz", 5)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.content) == {"status": "ok"}


async def test_readyz_flips_between_ready_and_not_ready(
    server: HttpServer, probe: Probe
) -> None:
    answer = await http_get(addr(server), "/readyz", 5)
    assert answer.status_code == 200
    body = Readiness.model_validate_json(answer.content)
    assert body.ready and body.temporal == "connected" and body.polling
    assert body.task_queue == "toolwarden-test" and body.running_tools == 2
    assert body.mirror_backlog == 3 and body.mirror_lag_seconds == 0.5

    probe.temporal = "unreachable: connection refused"
    answer = await http_get(addr(server), "/readyz", 5)
    assert answer.status_code == 503
    body = Readiness.model_validate_json(answer.content)
    assert not body.ready
    assert body.temporal == "unreachable: connection refused"

    probe.temporal = "connected"
    probe.polling = False
    answer = await http_get(addr(server), "/readyz", 5)
    assert answer.status_code == 503
    assert "not polling task queue 'toolwarden-test'" in Readiness.model_validate_json(
        answer.content
    ).problems()

    probe.polling = True
    assert (await http_get(addr(server), "/readyz", 5)).status_code == 200


async def test_degraded_mirror_keeps_the_worker_ready(server: HttpServer, probe: Probe) -> None:
    probe.mirror = "degraded: database is locked"
    answer = await http_get(addr(server), "/readyz", 5)
    assert answer.status_code == 200
    body = Readiness.model_validate_json(answer.content)
    assert body.ready
    assert body.problems() == ["mirror degraded: database is locked"]


async def test_failing_probe_means_not_ready(server: HttpServer, probe: Probe) -> None:
    probe.error = RuntimeError("client closed")
    answer = await http_get(addr(server), "/readyz", 5)
    assert answer.status_code == 503
    body = Readiness.model_validate_json(answer.content)
    assert not body.ready
    assert "RuntimeError: client closed" in body.temporal


async def test_hanging_probe_is_cut_short(server: HttpServer, probe: Probe) -> None:
    probe.hang = True
    started = time.monotonic()
    answer = await http_get(addr(server), "/readyz", 5)
    assert answer.status_code == 503
    assert time.monotonic() - started < 3
    assert "timed out" in Readiness.model_validate_json(answer.content).temporal


async def test_a_standard_http_client_reads_every_endpoint(
    server: HttpServer, probe: Probe
) -> None:
    def get(path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"{server.url}{path}", timeout=5) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers["Content-Type"], exc.read()

    status, _, body = await asyncio.to_thread(get, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = await asyncio.to_thread(get, "/readyz?verbose=1")
    assert status == 200 and json.loads(body)["ready"] is True
    status, ctype, body = await asyncio.to_thread(get, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert b"toolwarden_worker_ready 1.0" in body
    probe.polling = False
    status, _, body = await asyncio.to_thread(get, "/readyz")
    assert status == 503 and json.loads(body)["ready"] is False
    status, _, _ = await asyncio.to_thread(get, "/nothing-here")
    assert status == 404


async def test_unknown_paths_methods_and_head(server: HttpServer) -> None:
    answer = await raw_request(server, b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ")
    answer = await raw_request(server, b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    allow = next(line for line in answer.lower().split(b"\r\n") if line.startswith(b"allow:"))
    assert sorted(allow.removeprefix(b"allow:").replace(b" ", b"").split(b",")) == [b"get", b"head"]
    answer = await raw_request(server, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 16" in head.lower()
    assert body == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\r\n\r\n", b"400"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /healthz\r\n\r\n", b"400"),
        (b"GET /healthz SPDY/3\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", b"400"),
        # h11 (uvicorn's parser) answers 400 for a head line over its 16 KiB limit.
        (b"GET /healthz HTTP/1.1\r\nX: " + b"y" * 20_000 + b"\r\n\r\n", b"400"),
        (b"\xff\xfe\x00\x01 / HTTP/1.1\r\n\r\n", b"400"),
    ],
)
async def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(
    server: HttpServer, request_bytes: bytes, status: bytes
) -> None:
    answer = await raw_request(server, request_bytes)
    assert answer.split(b" ", 2)[1] == status
    assert (await http_get(addr(server), "/healthz", 5)).status_code == 200


async def test_half_sent_requests_neither_block_others_nor_stop(probe: Probe) -> None:
    srv = health_server(probe)
    await srv.start()
    idle: list[asyncio.StreamWriter] = []
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the blank line
        idle.append(writer)
    # An abruptly closed connection must not disturb anything either.
    _, gone = await asyncio.open_connection("127.0.0.1", srv.port)
    gone.transport.abort()
    assert (await http_get(f"127.0.0.1:{srv.port}", "/healthz", 5)).status_code == 200
    started = time.monotonic()
    await srv.stop()
    assert time.monotonic() - started < 2
    for writer in idle:
        writer.close()


async def test_metrics_without_sdk_address(server: HttpServer) -> None:
    metrics.hung_kill("health-page-tool")
    answer = await http_get(addr(server), "/metrics", 5)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == metrics.CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(answer.content.decode())}
    assert "toolwarden_hung_kills" in families
    assert "toolwarden_worker_ready" in families
    assert not any(name.startswith("temporal_") for name in families)


async def test_metrics_track_readiness(server: HttpServer, probe: Probe) -> None:
    def ready_value(page: bytes) -> float | None:
        for family in text_string_to_metric_families(page.decode()):
            if family.name == "toolwarden_worker_ready":
                return float(family.samples[0].value)
        return None

    page = (await http_get(addr(server), "/metrics", 5)).content
    assert ready_value(page) == 1.0
    found = {f.name: f for f in text_string_to_metric_families(page.decode())}
    assert found["toolwarden_mirror_backlog_updates"].samples[0].value == 3  # from the report
    assert found["toolwarden_mirror_lag_seconds"].samples[0].value == 0.5
    probe.temporal = "unreachable: deadline exceeded"
    assert ready_value((await http_get(addr(server), "/metrics", 5)).content) == 0.0


# -- the Temporal SDK's own metrics ------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_address() -> str:
    """A real Temporal runtime (Rust core) serving Prometheus metrics on a loopback port."""
    address = f"127.0.0.1:{free_port()}"
    # Configured as `connect_client(..., with_sdk_metrics=True)` configures the worker's.
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address, counters_total_suffix=True, durations_as_seconds=True
            )
        )
    )
    counter = runtime.metric_meter.create_counter("ops_probe_requests", "a probe counter")
    counter.add(7)
    _keep_alive.append(runtime)
    return address


_keep_alive: list[object] = []


async def test_metrics_include_the_sdk_runtime_metrics(probe: Probe, sdk_address: str) -> None:
    async def sdk_up() -> bool:
        try:
            return (await http_get(sdk_address, "/metrics", 2)).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(sdk_up, what="the SDK's Prometheus endpoint")
    async with serve_health(probe, sdk_metrics_address=sdk_address) as srv:
        answer = await http_get(f"127.0.0.1:{srv.port}", "/metrics", 10)
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.content.decode())}
    assert families["toolwarden_sdk_metrics_up"].samples[0].value == 1.0
    probe_family = families["ops_probe_requests"]
    assert probe_family.type == "counter"
    assert probe_family.samples[0].name == "ops_probe_requests_total"  # counters_total_suffix
    assert probe_family.samples[0].value == 7
    assert "toolwarden_runs_started" in families


async def test_unreachable_sdk_metrics_leave_the_page_usable(probe: Probe) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with serve_health(probe, sdk_metrics_address=dead) as srv:
        answer = await http_get(f"127.0.0.1:{srv.port}", "/metrics", 10)
    assert answer.status_code == 200
    text = answer.content.decode()
    assert f"# toolwarden: Temporal SDK metrics unavailable from {dead}: " in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["toolwarden_sdk_metrics_up"].samples[0].value == 0.0


async def test_a_hanging_sdk_endpoint_blocks_neither_the_scrape_nor_the_loop(
    probe: Probe,
) -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # never answers; returns when the scraper gives up
        writer.close()

    sdk = await asyncio.start_server(silent, "127.0.0.1", 0)
    sdk_addr = f"127.0.0.1:{sdk.sockets[0].getsockname()[1]}"
    try:
        async with serve_health(
            probe, sdk_metrics_address=sdk_addr, sdk_timeout=1.0
        ) as srv:
            started = time.monotonic()
            scrape = asyncio.create_task(http_get(f"127.0.0.1:{srv.port}", "/metrics", 10))
            await asyncio.wait_for(accepted.wait(), 5)
            # While the SDK fetch hangs, the same server still answers promptly.
            assert (await http_get(f"127.0.0.1:{srv.port}", "/healthz", 0.5)).status_code == 200
            answer = await scrape
            assert time.monotonic() - started < 5
    finally:
        sdk.close()
        await sdk.wait_closed()
    assert answer.status_code == 200
    assert b"unavailable from" in answer.content and b"timed out" in answer.content


async def test_chunked_sdk_answers_are_decoded(probe: Probe) -> None:
    payload = b"# TYPE fake_sdk_things_total counter\nfake_sdk_things_total 4\n"

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (payload[:10], payload[10:]):
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    sdk = await asyncio.start_server(chunked, "127.0.0.1", 0)
    sdk_addr = f"127.0.0.1:{sdk.sockets[0].getsockname()[1]}"
    try:
        async with serve_health(probe, sdk_metrics_address=sdk_addr) as srv:
            answer = await http_get(f"127.0.0.1:{srv.port}", "/metrics", 10)
    finally:
        sdk.close()
        await sdk.wait_closed()
    families = {f.name: f for f in text_string_to_metric_families(answer.content.decode())}
    assert families["fake_sdk_things"].samples[0].value == 4


# -- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:9464", ("::1", 9464)),
        (":9464", ("", 9464)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9464", "host:", "host:port", "::1:9464", "h:70000", ""])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_address(text)


def test_client_host_maps_wildcards_to_loopback() -> None:
    assert client_host("0.0.0.0") == "127.0.0.1"
    assert client_host("") == "127.0.0.1"
    assert client_host("::") == "::1"
    assert client_host("10.1.2.3") == "10.1.2.3"
