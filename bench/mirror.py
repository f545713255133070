"""The SQL mirror under load: writer throughput and lag, and its cost to the runs themselves.

    python bench/mirror.py [--runs 500] [--seconds 20] [--interval 1] [--n 200] [--rounds 3]
                           [--backends sqlite,postgresql] [--skip-writer] [--skip-e2e]

(a) Writer level, per backend: one `MirrorWriter` is fed what --runs concurrent runs that
    heartbeat every second produce over --seconds: a start snapshot per run (staggered over the
    first second), one heartbeat per run per second (a new message each time), and a final
    snapshot with its events. The writer throttles heartbeats to one write per run per
    --interval seconds (1 s = every heartbeat written; the product default is 5 s). Reported:
    rows written per second, transactions per second, the writer thread's CPU, and the lag from
    handing an item to the writer to a separate reader connection seeing it in `tool_runs`
    (polled every 50 ms, so figures include up to 50 ms of polling resolution), p50/p95/max,
    for heartbeats and for snapshots.
(b) End to end, on a private dev server: N concurrent supervised `sh -c 'sleep 1'` runs through
    `Supervisor`, with a worker whose mirror is off, on SQLite, or on PostgreSQL (one worker per
    mode on its own task queue, all in this process; worker heartbeat every 1 s, mirror
    heartbeat writes every --interval s). The modes alternate for --rounds rounds after a
    warm-up; runs/s per mode (median) and the ratio mirror-on / mirror-off, target >= 0.90.
    Each batch also checks that every run reached the mirror as succeeded.

PostgreSQL is 127.0.0.1:5432, database `test`, user postgres; the bench makes its own schemas
and drops them. Every wait has a deadline; the defaults finish in about five minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import psycopg
from common import BenchServer, bench_server, load_average, machine_line, new_queue, other_load, percentile
from sqlalchemy import Engine, event
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from toolwarden.client import Supervisor
from toolwarden.config import MirrorSettings, Settings
from toolwarden.mirror import MirrorWriter, upgrade
from toolwarden.models import (
    AttemptOutcome,
    AttemptResult,
    LiveDetails,
    RunEvent,
    RunResult,
    RunSpec,
    RunState,
    RunStatus,
    RunUpdate,
)
from toolwarden.worker.runner import build_worker

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
POLL_SECONDS = 0.05
CATCH_UP_TIMEOUT = 120.0
BATCH_TIMEOUT = 300.0
TARGET_RATIO = 0.90


# ---------------------------------------------------------------------------------------------
# Databases


@dataclass
class Database:
    backend: str
    url: str
    path: Path | None = None  # SQLite file
    schema: str | None = None  # PostgreSQL schema

    def reader(self) -> Any:
        """A plain DB-API connection for polling (not the mirror's engine: on SQLite that one
        opens every transaction with BEGIN IMMEDIATE, which would contend with the writer)."""
        if self.path is not None:
            return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn = psycopg.connect(PG_ADMIN, autocommit=True)
        conn.execute(f"SET search_path TO {self.schema}")
        return conn


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[Database]:
    """A fresh mirror database migrated to head; a PostgreSQL schema is dropped afterwards."""
    if backend == "sqlite":
        path = workdir / f"mirror-{uuid.uuid4().hex[:8]}.db"
        db = Database(backend, f"sqlite:///{path}", path=path)
        upgrade(db.url)
        yield db
        return
    schema = f"bench_mirror_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        options = quote(f"-csearch_path={schema}")
        db = Database(
            backend, f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options={options}", schema=schema
        )
        upgrade(db.url)
        yield db
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class CommitCounter:
    """Counts commits, and the wall time from BEGIN to COMMIT, on every SQLAlchemy engine of this
    process (only the mirror writers commit; the pollers use plain DB-API connections)."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self._began: dict[int, float] = {}
        event.listen(Engine, "begin", self._on_begin)
        event.listen(Engine, "commit", self._on_commit)

    def _on_begin(self, conn: Any) -> None:
        self._began[id(conn)] = time.monotonic()

    def _on_commit(self, conn: Any) -> None:
        self.count += 1
        began = self._began.pop(id(conn), None)
        if began is not None:
            self.seconds += time.monotonic() - began

    def close(self) -> None:
        event.remove(Engine, "begin", self._on_begin)
        event.remove(Engine, "commit", self._on_commit)


class SdkWarnings(logging.Handler):
    """Counts the SDK core's warnings instead of printing them: under overload it reports
    workflow tasks slower than 5 s (TMPRL1104) and tasks that timed out before completion."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.slow_tasks = 0
        self.timed_out_tasks = 0
        self.other = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "TMPRL1104" in text:
            self.slow_tasks += 1
        elif "Task not found" in text:
            self.timed_out_tasks += 1
        else:
            self.other += 1

    def snapshot(self) -> tuple[int, int]:
        return self.slow_tasks, self.timed_out_tasks


def install_sdk_log_counter() -> SdkWarnings:
    counter = SdkWarnings()
    logger = logging.getLogger("bench.sdk")
    logger.propagate = False
    logger.addHandler(counter)
    logger.setLevel(logging.WARNING)
    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logger),
    )
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=logging_config)), error_if_already_set=True)
    return counter


def writer_thread_cpu() -> float:
    """CPU seconds of the mirror writer threads of this process (psutil per-thread times)."""
    ids = {t.native_id for t in threading.enumerate() if t.name == "toolwarden-mirror"}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)


def process_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


# ---------------------------------------------------------------------------------------------
# (a) Writer level


def spec_for(run_id: str) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        tool_name=f"tool-{int(run_id.rsplit('-', 1)[1]) % 10}",
        argv=["bench-tool", "--work"],
        timeout=timedelta(minutes=10),
        hang_timeout=timedelta(seconds=90),
    )


def start_update(run_id: str, at: datetime) -> RunUpdate:
    spec = spec_for(run_id)
    status = RunStatus(
        run_id=run_id,
        tool_name=spec.tool_name,
        argv=spec.argv,
        state=RunState.RUNNING,
        attempt=1,
        started_at=at,
        updated_at=at,
        spec=spec,
    )
    events = [
        RunEvent(seq=1, at=at, kind="started", data={"attempt": 0}),
        RunEvent(seq=2, at=at, kind="attempt_started", data={"attempt": 1, "pid": 1000}),
    ]
    return RunUpdate(status=status, events=events)


def end_update(run_id: str, started: datetime, at: datetime) -> RunUpdate:
    update = start_update(run_id, started)
    update.status.state = RunState.SUCCEEDED
    update.status.updated_at = update.status.ended_at = at
    update.status.exit_code = 0
    update.status.last_attempt = AttemptResult(
        attempt=1,
        outcome=AttemptOutcome.SUCCEEDED,
        exit_code=0,
        pid=1000,
        pgid=1000,
        host="bench",
        started_at=started,
        ended_at=at,
        progress=1.0,
        message="done",
    )
    update.events = [
        RunEvent(seq=3, at=at, kind="attempt_ended", data={"attempt": 1, "outcome": "succeeded"}),
        RunEvent(seq=4, at=at, kind="ended", data={"state": "succeeded"}),
    ]
    return update


@dataclass
class Observer:
    """Polls `tool_runs` on its own connection and notes when each submitted item first shows."""

    db: Database
    writer: MirrorWriter
    submitted: dict[tuple[str, str], float] = field(default_factory=dict)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    stats_lag: list[float] = field(default_factory=list)
    max_backlog: int = 0
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bench-observer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        conn = self.db.reader()
        try:
            while not self._stop.is_set():
                rows = conn.execute("SELECT run_id, state, message FROM tool_runs").fetchall()
                now = time.monotonic()
                self.polls += 1
                for run_id, state, message in rows:
                    for key in ((run_id, "start"), (run_id, f"beat:{message}"), (run_id, f"state:{state}")):
                        if key not in self.seen:
                            self.seen[key] = now
                stats = self.writer.stats()
                self.max_backlog = max(self.max_backlog, stats.backlog)
                if stats.lag_seconds is not None:
                    self.stats_lag.append(stats.lag_seconds)
                self._stop.wait(POLL_SECONDS)
        finally:
            conn.close()

    def lags(self, kind: str) -> list[float]:
        return [
            self.seen[key] - at
            for key, at in self.submitted.items()
            if key[1].startswith(kind) and key in self.seen and self.seen[key] >= at
        ]


def summary(values: list[float]) -> str:
    if not values:
        return "none observed"
    return (
        f"p50 {percentile(values, 50) * 1000:.0f} ms, p95 {percentile(values, 95) * 1000:.0f} ms, "
        f"max {max(values) * 1000:.0f} ms (n={len(values)})"
    )


def writer_bench(db: Database, runs: int, seconds: int, interval: float, commits: CommitCounter) -> None:
    settings = MirrorSettings(heartbeat_write_interval=timedelta(seconds=interval))
    writer = MirrorWriter(db.url, settings, upgrade_schema=False)
    writer.start()
    observer = Observer(db, writer)
    ids = [f"wr-{uuid.uuid4().hex[:6]}-{i}" for i in range(runs)]
    # (due offset, kind, run index, beat number), staggered so each second carries `runs` beats.
    schedule: list[tuple[float, str, int, int]] = []
    for i in range(runs):
        offset = i / runs
        schedule.append((offset, "start", i, 0))
        schedule += [(offset + k + 0.001, "beat", i, k) for k in range(seconds)]
        schedule.append((offset + seconds, "end", i, 0))
    schedule.sort()
    started_at: dict[int, datetime] = {}
    observer.start()
    load = load_average()
    cpu0, thread0 = process_cpu(), writer_thread_cpu()
    commits0, written0 = commits.count, writer.stats().written_total
    tx_seconds0 = commits.seconds
    t0 = time.monotonic()
    behind = 0.0
    for due, kind, i, k in schedule:
        wait = t0 + due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            behind = max(behind, -wait)
        run_id = ids[i]
        now = datetime.now(UTC)
        if kind == "start":
            started_at[i] = now
            observer.submitted[(run_id, "start")] = time.monotonic()
            writer.submit(start_update(run_id, now))
        elif kind == "beat":
            message = f"b{k}"
            observer.submitted[(run_id, f"beat:{message}")] = time.monotonic()
            writer.heartbeat(
                run_id,
                LiveDetails(
                    attempt=1,
                    pid=1000,
                    pgid=1000,
                    host="bench",
                    started_at=started_at[i],
                    last_heartbeat_at=now,
                    progress=k / seconds,
                    message=message,
                ),
            )
        else:
            observer.submitted[(run_id, "state:succeeded")] = time.monotonic()
            writer.submit(end_update(run_id, started_at[i], now))
    feed_wall = time.monotonic() - t0
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    while not all((r, "state:succeeded") in observer.seen for r in ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{db.backend}: the mirror did not catch up within {CATCH_UP_TIMEOUT:g}s")
        time.sleep(0.05)
    catch_up = time.monotonic() - t0 - feed_wall
    stats = writer.stats()
    written = stats.written_total - written0
    tx = commits.count - commits0
    tx_seconds = commits.seconds - tx_seconds0
    thread_cpu = writer_thread_cpu() - thread0
    cpu = process_cpu() - cpu0
    total_wall = feed_wall + catch_up
    observer.stop()
    writer.stop(timeout=10)
    beats_sent = runs * seconds
    beats_shown = len(observer.lags("beat:"))
    print(
        f"  {db.backend:<10} {runs} runs x {seconds} s, heartbeat writes every {interval:g} s "
        f"(load {load}; feeder at most {behind * 1000:.0f} ms behind schedule)"
    )
    print(
        f"    rows written: {written} ({written / total_wall:.0f}/s: {stats.heartbeats_written_total} "
        f"heartbeats, {written - stats.heartbeats_written_total} snapshots, "
        f"{stats.events_written_total} events) in {tx} transactions ({tx / total_wall:.1f}/s, "
        f"{written / max(tx, 1):.0f} rows each, {tx_seconds / max(tx, 1) * 1000:.0f} ms each from BEGIN to "
        f"COMMIT); caught up {catch_up * 1000:.0f} ms after the last item"
    )
    print(
        f"    CPU: writer thread {thread_cpu / total_wall * 100:.0f}% of a core, whole process "
        f"{cpu / total_wall * 100:.0f}% (feeder and poller included)"
    )
    print(f"    lag heartbeat -> row: {summary(observer.lags('beat:'))}")
    print(f"      ({beats_shown} of {beats_sent} heartbeats seen; the rest were superseded by a newer one)")
    print(f"    lag snapshot  -> row: {summary(observer.lags('start') + observer.lags('state:'))}")
    print(
        f"    writer stats: max backlog {observer.max_backlog}, lag_seconds p95 "
        f"{percentile(observer.stats_lag, 95) * 1000 if observer.stats_lag else 0:.0f} ms, "
        f"failures {stats.failures_total}, dropped events {stats.dropped_events_total}"
    )


# ---------------------------------------------------------------------------------------------
# (b) End to end


@dataclass
class Mode:
    name: str
    settings: Settings
    writer: MirrorWriter | None
    db: Database | None
    rates: list[float] = field(default_factory=list)


@dataclass
class Batch:
    wall: float
    failures: list[str]
    cpu_self: float
    cpu_server: float
    catch_up: float | None
    max_backlog: int
    slow_tasks: int
    timed_out_tasks: int
    cpu_writer: float
    transactions: int


async def mirror_rows(db: Database, stem: str) -> int:
    def count() -> int:
        conn = db.reader()
        try:
            (n,) = conn.execute(
                f"SELECT count(*) FROM tool_runs WHERE run_id LIKE '{stem}-%' AND state = 'succeeded'"
            ).fetchone()
            return int(n)
        finally:
            conn.close()

    return await asyncio.to_thread(count)


async def batch(server: BenchServer, mode: Mode, n: int, sdk: SdkWarnings, commits: CommitCounter) -> Batch:
    supervisor = Supervisor(server.client, mode.settings)
    stem = f"e2e-{mode.name}-{uuid.uuid4().hex[:6]}"
    me = psutil.Process()
    them = psutil.Process(server.server.process.pid) if server.server.process else None

    def cpu_pair() -> tuple[float, float]:
        mine = me.cpu_times()
        theirs = them.cpu_times() if them else None
        return mine.user + mine.system, (theirs.user + theirs.system) if theirs else 0.0

    async def one(i: int) -> RunResult:
        spec = mode.settings.run_spec(run_id=f"{stem}-{i}", argv=["sh", "-c", "sleep 1"])
        return await (await supervisor.start_run(spec)).result()

    max_backlog = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal max_backlog
        while not done.is_set() and mode.writer is not None:
            max_backlog = max(max_backlog, mode.writer.stats().backlog)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    w0 = sdk.snapshot()
    t0 = writer_thread_cpu()
    tx0 = commits.count
    c0 = cpu_pair()
    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), BATCH_TIMEOUT)
    wall = time.monotonic() - started
    c1 = cpu_pair()
    writer_cpu = writer_thread_cpu() - t0
    failures = [f"{r.run_id}: {r.state.value}" for r in results if r.state is not RunState.SUCCEEDED]
    catch_up = None
    if mode.db is not None:
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while await mirror_rows(mode.db, stem) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{mode.name}: {stem} rows not all succeeded in the mirror")
            await asyncio.sleep(0.05)
        catch_up = time.monotonic() - started - wall
    done.set()
    await watcher
    w1 = sdk.snapshot()
    return Batch(
        wall,
        failures,
        c1[0] - c0[0],
        c1[1] - c0[1],
        catch_up,
        max_backlog,
        w1[0] - w0[0],
        w1[1] - w0[1],
        writer_cpu,
        commits.count - tx0,
    )


async def end_to_end(
    args: argparse.Namespace, workdir: Path, sdk: SdkWarnings, commits: CommitCounter
) -> None:
    async with bench_server() as server, contextlib.AsyncExitStack() as stack:
        modes: list[Mode] = []
        for name in ["off", *args.backends]:
            settings = server.settings(new_queue(name))
            worker = settings.worker.model_copy(update={"heartbeat_interval": timedelta(seconds=1)})
            db = None if name == "off" else stack.enter_context(database(name, workdir))
            mirror = MirrorSettings(
                enabled=db is not None,
                url=db.url if db else None,
                heartbeat_write_interval=timedelta(seconds=args.interval),
            )
            settings = settings.model_copy(update={"worker": worker, "mirror": mirror})
            writer = None
            if db is not None:
                writer = MirrorWriter(db.url, mirror, upgrade_schema=False)
                writer.start()
                stack.callback(writer.stop, 10.0)
            await stack.enter_async_context(build_worker(server.client, settings, mirror=writer))
            modes.append(Mode(name, settings, writer, db))
        for mode in modes:  # warm-up: sandbox imports, cold caches, first connections
            await batch(server, mode, min(20, args.n), sdk, commits)
        for round_no in range(args.rounds):
            order = modes[round_no % len(modes) :] + modes[: round_no % len(modes)]
            line = []
            for mode in order:
                load = load_average()
                result = await batch(server, mode, args.n, sdk, commits)
                mode.rates.append(args.n / result.wall)
                own = ""
                extra = ""
                if result.catch_up is not None:
                    own = f" (mirror thread {result.cpu_writer:.1f} s, {result.transactions} transactions)"
                    extra = f"; mirror max backlog {result.max_backlog}, all rows in +{result.catch_up:.2f} s"
                line.append(
                    f"    {mode.name:<10} {args.n / result.wall:6.1f} runs/s ({result.wall:.2f} s; CPU "
                    f"worker+client {result.cpu_self:.1f} s{own}, "
                    f"server {result.cpu_server:.1f} s{extra}; SDK warnings: workflow tasks > 5 s "
                    f"{result.slow_tasks}, timed out {result.timed_out_tasks}; load {load})"
                )
                for failure in result.failures[:5]:
                    line.append(f"      not succeeded: {failure}")
            print(f"  round {round_no + 1}:")
            print("\n".join(line))
        off = statistics.median(modes[0].rates)
        print(f"  N={args.n} concurrent `sh -c 'sleep 1'` runs, median of {args.rounds} rounds:")
        print(f"    mirror off: {off:.1f} runs/s")
        for mode in modes[1:]:
            rate = statistics.median(mode.rates)
            ratio = rate / off
            verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
            per_round = ", ".join(f"{r / o:.2f}" for r, o in zip(mode.rates, modes[0].rates, strict=True))
            print(
                f"    mirror on {mode.name}: {rate:.1f} runs/s, on/off {ratio:.2f} "
                f"(per round {per_round}); target >= {TARGET_RATIO:.2f}: {verdict}"
            )


async def main(args: argparse.Namespace) -> None:
    sdk = install_sdk_log_counter()
    print(f"bench/mirror.py  {machine_line()}")
    print(f"busy before the bench: {other_load()}")
    workdir = Path(tempfile.mkdtemp(prefix="toolwarden-bench-mirror-"))
    commits = CommitCounter()
    try:
        if not args.skip_writer:
            print(f"(a) MirrorWriter fed by {args.runs} runs heartbeating every second for {args.seconds} s")
            for backend in args.backends:
                with database(backend, workdir) as db:
                    await asyncio.to_thread(writer_bench, db, args.runs, args.seconds, args.interval, commits)
        if not args.skip_e2e:
            print(f"(b) end to end: {args.n} concurrent supervised runs, mirror off vs on")
            await end_to_end(args, workdir, sdk, commits)
    finally:
        commits.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"busy after the bench: {other_load()}; load {load_average()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=500, help="concurrent heartbeating runs in (a)")
    parser.add_argument("--seconds", type=int, default=20, help="how long (a) feeds the writer")
    parser.add_argument("--interval", type=float, default=1.0, help="mirror heartbeat write interval (s)")
    parser.add_argument("--n", type=int, default=200, help="concurrent supervised runs in (b)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of (b)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--skip-writer", action="store_true", help="skip (a)")
    parser.add_argument("--skip-e2e", action="store_true", help="skip (b)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(args.backends) <= {"sqlite", "postgresql"}:
        parser.error("--backends takes sqlite and/or postgresql")
    if min(args.runs, args.seconds, args.n, args.rounds) < 1 or args.interval < 0:
        parser.error("--runs, --seconds, --n and --rounds must be >= 1, --interval >= 0")
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args(sys.argv[1:])))
    except (TimeoutError, psycopg.OperationalError) as exc:
        raise SystemExit(f"error: {exc}") from None
