"""Deciding from the web page: from the POST leaving the browser to the tool holding the decision.

    python bench/web.py [--samples 50] [--batch 6]

On one private dev server with one toolwarden worker in this process, serving the worker's
HTTP app (page, API, links) on a free port, each sample is a run of
bench/tools/stamp_approval_tool.py blocked in `request_approval`. It is decided by one of two
deciders, interleaved in the same run:
  page        the page's Approve form as a browser submits it: one POST of
              /approvals/RUN/KEY with the session cookie and CSRF token of a signed-in
              approver, over a kept-alive connection (the click itself, in Chromium, adds only
              the browser's own few milliseconds);
  toolwarden  `toolwarden approve RUN/k --by bench` (the installed console script).
The round trip runs from just before the POST is sent (or the CLI process is started) to the
instant the tool writes `time.time()` after `request_approval` returns; for the page, the POST's
own response time is reported too. Runs are started a batch at a time and decided one after the
other, each run ending before the next decision, so samples never overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from approvals import KEY, STAMP_TOOL, decider_argv, read_stamp, waiting
from common import (
    BenchServer,
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

from toolwarden.client import RunHandle, Supervisor
from toolwarden.config import Settings
from toolwarden.http.app import HttpServer, create_app
from toolwarden.http.health import HealthChecks, Readiness
from toolwarden.http.services import HttpServices
from toolwarden.http.tokens import TokenStore
from toolwarden.models import RunState
from toolwarden.worker.runner import build_worker

METHODS = ("page", "toolwarden")
TIMEOUT = 60.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Sample:
    method: str
    round_trip: float  # decider started -> tool holds the decision
    answered: float  # decider started -> POST answered / CLI exited


async def sign_in(page: httpx.AsyncClient, token: str) -> str:
    """Sign in through the page's form; the CSRF token of the session's forms."""
    form = await page.get("/signin")
    csrf = _CSRF.search(form.text)
    assert csrf, "no CSRF field on the sign-in form"
    signed = await page.post("/signin", data={"token": token, "csrf": csrf.group(1), "next": "/"})
    if signed.status_code != 303:
        raise RuntimeError(f"sign-in failed: {signed.status_code}")
    inbox = await page.get("/")
    session = _CSRF.search(inbox.text)
    assert session, "no CSRF field on the inbox"
    return session.group(1)


async def decide_by_page(page: httpx.AsyncClient, csrf: str, handle: RunHandle, stamp: Path) -> Sample:
    started = time.time()
    answer = await page.post(f"/approvals/{handle.run_id}/{KEY}", data={"action": "approve", "csrf": csrf})
    answered = time.time()
    if answer.status_code != 200:
        raise RuntimeError(f"page POST for {handle.run_id}: {answer.status_code}")
    held: float = await wait_for(lambda: read_stamp(stamp), TIMEOUT, f"page: {handle.run_id}", 0.005)
    return Sample("page", held - started, answered - started)


async def decide_by_cli(server: BenchServer, settings: Settings, handle: RunHandle, stamp: Path) -> Sample:
    started = time.time()
    process = await asyncio.create_subprocess_exec(
        *decider_argv("toolwarden", server, handle.run_id),
        env=server.env(settings), cwd=str(server.home), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    held: float = await wait_for(lambda: read_stamp(stamp), TIMEOUT, f"cli: {handle.run_id}", 0.005)
    await asyncio.wait_for(process.wait(), TIMEOUT)
    return Sample("toolwarden", held - started, time.time() - started)


async def run_batch(
    server: BenchServer, supervisor: Supervisor, settings: Settings, methods: list[str],
    stamps: Path, page: httpx.AsyncClient, csrf: str,
) -> list[Sample]:
    handles: list[tuple[RunHandle, Path]] = []
    for _ in methods:
        run_id = f"bench-web-{uuid.uuid4().hex[:8]}"
        stamp = stamps / f"{run_id}.stamp"
        spec = settings.run_spec(run_id=run_id, argv=[sys.executable, str(STAMP_TOOL), KEY, str(stamp)])
        handles.append((await supervisor.start_run(spec), stamp))
    await asyncio.gather(
        *(wait_for(lambda h=h: waiting(server, h.run_id), TIMEOUT, f"{h.run_id} pending", 0.05)
          for h, _ in handles)
    )
    samples = []
    for (handle, stamp), method in zip(handles, methods, strict=True):
        if method == "page":
            sample = await decide_by_page(page, csrf, handle, stamp)
        else:
            sample = await decide_by_cli(server, settings, handle, stamp)
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
        if result.state is not RunState.SUCCEEDED:
            raise RuntimeError(f"{handle.run_id} ended {result.state.value}")
        samples.append(sample)
    return samples


def report(samples: list[Sample]) -> None:
    print(f"{'decider':<11} {'round trip p50':>14} {'p95':>8} {'max':>8}  {'answered p50':>12} {'p95':>8}")
    for method in METHODS:
        trips = [s.round_trip for s in samples if s.method == method]
        answered = [s.answered for s in samples if s.method == method]
        print(
            f"{method:<11} {ms(median(trips)):>14} {ms(percentile(trips, 95)):>8} {ms(max(trips)):>8}  "
            f"{ms(median(answered)):>12} {ms(percentile(answered, 95)):>8}"
        )
    page = [s.round_trip for s in samples if s.method == "page"]
    cli = [s.round_trip for s in samples if s.method == "toolwarden"]
    print(
        f"round trip, page / toolwarden approve: p50 {median(page) / median(cli):.2f}x, "
        f"p95 {percentile(page, 95) / percentile(cli, 95):.2f}x"
    )


async def main(args: argparse.Namespace) -> None:
    print(f"bench/web.py  {machine_line()}")
    print(f"busy before the bench: {other_load()}")
    started = time.monotonic()
    async with bench_server() as server:
        settings = server.settings(new_queue("web"))
        supervisor = Supervisor(server.client, settings)
        stamps = server.home / "stamps"
        stamps.mkdir()
        tokens = TokenStore(server.home / "tokens.json")

        async def readiness() -> Readiness:
            return Readiness(ready=True, temporal="connected", polling=True,
                             task_queue=settings.temporal.task_queue, mirror="disabled")

        services = HttpServices(settings=settings, health=HealthChecks(readiness), tokens=tokens,
                                supervisor=supervisor)
        order: list[str] = []
        for i in range(args.samples):
            order += list(METHODS[i % 2 :] + METHODS[: i % 2])
        samples: list[Sample] = []
        async with (
            build_worker(server.client, settings),
            HttpServer(create_app(services), "127.0.0.1:0") as http,
            httpx.AsyncClient(base_url=http.url, timeout=TIMEOUT) as page,
        ):
            csrf = await sign_in(page, tokens.create("bench"))
            await run_batch(server, supervisor, settings, list(METHODS), stamps, page, csrf)  # warm-up
            for at in range(0, len(order), args.batch):
                samples += await run_batch(
                    server, supervisor, settings, order[at : at + args.batch], stamps, page, csrf
                )
                if (at // args.batch) % 5 == 4:
                    print(f"  {len(samples)}/{len(order)} samples, load {load_average()}", flush=True)
    print(f"{args.samples} approvals per decider, in {time.monotonic() - started:.0f} s:")
    report(samples)
    print(f"busy after the bench: {other_load()}; load {load_average()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=50, help="approvals per decider")
    parser.add_argument("--batch", type=int, default=6, help="runs started ahead at a time")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE as set (default: re-run with a .pyc cache)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.batch < 1:
        parser.error("--samples and --batch must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    use_bytecode_cache(sys.argv[1:])
    asyncio.run(main(arguments))
