"""HTTP API throughput: `GET /api/v1/approvals` with 500 pending approvals, in requests per second.

    python bench/http_api.py [--pending 500] [--requests 40] [--concurrency 4]

On one private dev server, one toolwarden worker and the worker's HTTP app (create_app on
uvicorn, as `toolwarden worker` serves it) run in this process. `--pending` runs are started
with a gate (`approve_before`), so each waits on one pending approval without any tool process.
Then a fixed number of authenticated `GET /api/v1/approvals` requests is sent by
`--concurrency` httpx clients over loopback, after one warm-up request; every answer must be
200 and list all the pending approvals. Printed: requests per second over the whole load, and
the latency p50/p95/max of one request.

Each request is the whole decision layer's listing (`Supervisor.pending_approvals`): one
visibility query, then one `status` query per waiting run, answered by the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

import httpx
from common import (
    bench_server,
    load_average,
    machine_line,
    median,
    ms,
    new_queue,
    other_load,
    percentile,
    use_bytecode_cache,
    wait_for,
)

from toolwarden.client import Supervisor
from toolwarden.http.app import HttpServer, create_app
from toolwarden.http.health import HealthChecks, Readiness
from toolwarden.http.services import HttpServices
from toolwarden.http.tokens import TokenStore
from toolwarden.worker.runner import build_worker

START_CONCURRENCY = 50


async def _ready() -> Readiness:
    return Readiness(
        ready=True, temporal="connected", polling=True, task_queue="bench", mirror="disabled"
    )


async def start_gated_runs(supervisor: Supervisor, count: int) -> None:
    settings = supervisor.settings
    limit = asyncio.Semaphore(START_CONCURRENCY)

    async def one(i: int) -> None:
        spec = settings.run_spec(
            run_id=f"gated-{i}-{uuid.uuid4().hex[:6]}",
            argv=["true"],
            name="bench-gate",
            overrides={"approve_before": f"Bench gate {i}"},
        )
        async with limit:
            await supervisor.start_run(spec)

    await asyncio.gather(*(one(i) for i in range(count)))


async def load(url: str, token: str, requests: int, concurrency: int, pending: int) -> list[float]:
    """`requests` GETs spread over `concurrency` clients; returns each one's latency."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def client() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            for _ in remaining:
                started = time.perf_counter()
                answer = await http.get("/api/v1/approvals")
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise SystemExit(f"error: HTTP {answer.status_code}: {answer.text[:200]}")
                listed = len(answer.json()["approvals"])
                if listed != pending:
                    raise SystemExit(f"error: {listed} approvals listed, {pending} pending")

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


async def main(args: argparse.Namespace) -> None:
    print(f"bench/http_api.py  {machine_line()}")
    print(f"busy before the bench: {other_load()}")
    async with bench_server() as server:
        settings = server.settings(new_queue("http"))
        supervisor = Supervisor(server.client, settings)
        tokens = TokenStore(settings.tokens_file)
        token = tokens.create("bench")
        services = HttpServices(
            settings=settings, health=HealthChecks(_ready), tokens=tokens, supervisor=supervisor
        )
        async with (
            build_worker(server.client, settings),
            HttpServer(create_app(services), "127.0.0.1:0") as http_server,
        ):
            started = time.monotonic()
            await start_gated_runs(supervisor, args.pending)

            async def all_pending() -> bool:
                listed = await supervisor.pending_approvals()
                return len(listed.approvals) == args.pending

            await wait_for(all_pending, timeout=300, what=f"{args.pending} pending", interval=0.5)
            print(f"{args.pending} gated runs pending in {time.monotonic() - started:.1f} s")
            await load(http_server.url, token, 1, 1, args.pending)  # warm-up, not counted
            began = time.perf_counter()
            latencies = await load(
                http_server.url, token, args.requests, args.concurrency, args.pending
            )
            elapsed = time.perf_counter() - began
    print(
        f"GET /api/v1/approvals, {args.pending} pending, {args.requests} requests by "
        f"{args.concurrency} clients: {args.requests / elapsed:.2f} req/s "
        f"({elapsed:.1f} s); latency p50 {ms(median(latencies))}, "
        f"p95 {ms(percentile(latencies, 95))}, max {ms(max(latencies))}"
    )
    print(f"busy after the bench: {other_load()}; load {load_average()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pending", type=int, default=500, help="pending approvals")
    parser.add_argument("--requests", type=int, default=40, help="requests counted")
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as set (default: re-run with a .pyc cache)",
    )
    args = parser.parse_args(argv)
    if min(args.pending, args.requests, args.concurrency) < 1:
        parser.error("--pending, --requests and --concurrency must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    use_bytecode_cache(sys.argv[1:])
    asyncio.run(main(arguments))
