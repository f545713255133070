"""Chaos: the PostgreSQL mirror unreachable for 60 s while runs start and finish all along.

The worker's mirror writer reaches PostgreSQL through the suite's TCP proxy, which is stopped
(listener and every connection closed) for `OUTAGE_S` seconds while a loader keeps starting
runs: quick shell tools, heartbeating tools, and tools that ask for approval (blocking, or
`--or-exit` parked), which a decider approves as they appear. Not one run may fail. Once the
proxy is back the writer catches up, and its rows (runs, approvals, events) equal, column for
column, what a rebuild from Temporal writes into a second, fresh schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from temporalio.client import Client

from tests.chaos.test_worker_kill import processes_of_runs
from tests.mirror.conftest import PG_DB, PG_HOST, PG_PORT, pg_url, require_pg
from tests.mirror.tcpproxy import TcpProxy
from tests.support import eventually, free_port, tool
from toolwarden.client import DecisionRefused, RunHandle, Supervisor
from toolwarden.config import MirrorSettings, Settings
from toolwarden.metrics import MetricsSink
from toolwarden.mirror import MirrorWriter, make_engine, upgrade
from toolwarden.mirror.rebuild import rebuild_from_temporal
from toolwarden.mirror.schema import approvals, run_events, tool_runs
from toolwarden.models import RunResult, RunState
from toolwarden.worker.runner import build_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

WARM_S = 10.0
OUTAGE_S = 60.0
START_EVERY_S = 0.5
# Columns the two writers may rightly differ in: when each wrote the row, its own row id, and
# the heartbeat-only columns of a finished run, which its final status does not carry
# (docs/database-schema.md, "Rebuilding"): they are compared apart, and counted.
VOLATILE = {"mirrored_at", "id"}
HEARTBEAT_ONLY = ("last_heartbeat_at", "last_output_at")


def _admin(sql: str) -> None:
    with psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}", autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def schemas() -> Iterator[tuple[str, str]]:
    """Two fresh schemas: the live mirror's, and the rebuild's."""
    require_pg()
    names = (f"tw_chaos_{uuid.uuid4().hex[:12]}", f"tw_rebuild_{uuid.uuid4().hex[:12]}")
    for name in names:
        _admin(f"CREATE SCHEMA {name}")
    try:
        yield names
    finally:
        for name in names:
            _admin(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def table_rows(url: str, table: Any, key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found = [dict(r._mapping) for r in conn.execute(select(table))]
    finally:
        engine.dispose()
    return {
        tuple(row[k] for k in key): {k: v for k, v in row.items() if k not in VOLATILE}
        for row in found
    }


def snapshot(url: str) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    return {
        "tool_runs": table_rows(url, tool_runs, ("run_id",)),
        "approvals": table_rows(url, approvals, ("approval_id",)),
        "run_events": table_rows(url, run_events, ("run_id", "seq")),
    }


def differences(live: dict[str, Any], rebuilt: dict[str, Any]) -> list[str]:
    found = []
    for name, rows in rebuilt.items():
        mine = live[name]
        for key in sorted(set(rows) | set(mine), key=str):
            if key not in mine:
                found.append(f"{name} {key}: missing from the mirror")
            elif key not in rows:
                found.append(f"{name} {key}: in the mirror only")
            else:
                changed = {
                    c: (mine[key][c], rows[key][c])
                    for c in rows[key]
                    if mine[key][c] != rows[key][c] and c not in HEARTBEAT_ONLY
                }
                if changed:
                    found.append(f"{name} {key}: {changed}")
    return found


class Load:
    """Starts a run every `START_EVERY_S` until stopped; approves what they ask."""

    def __init__(self, supervisor: Supervisor, settings: Settings) -> None:
        self.supervisor = supervisor
        self.settings = settings
        self.stem = uuid.uuid4().hex[:6]
        self.handles: dict[str, RunHandle] = {}
        self.kinds: Counter[str] = Counter()
        self.started_at: dict[str, float] = {}
        self.ended_at: dict[str, float] = {}
        self.results: dict[str, RunResult] = {}
        self.decided = 0
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []

    def argv(self, i: int) -> tuple[str, list[str]]:
        if i % 10 in (3, 7):
            return "blocking", [*tool("approval_tool.py"), "ship", "Ship it?"]
        if i % 10 == 5:
            return "parked", [*tool("approval_tool.py"), "ship", "Ship later?", "--or-exit"]
        if i % 10 == 9:
            return "beats", [*tool("beat_tool.py"), "2"]
        return "shell", ["sh", "-c", "echo start; sleep 0.3; echo done"]

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self._starter()), asyncio.create_task(self._decider())]

    async def stop(self) -> None:
        self.stopping.set()
        await self.tasks[0]

    async def _starter(self) -> None:
        i = 0
        while not self.stopping.is_set():
            kind, argv = self.argv(i)
            rid = f"mirror-{self.stem}-{i:04d}-{kind}"
            handle = await self.supervisor.start_run(self.settings.run_spec(run_id=rid, argv=argv))
            self.handles[rid] = handle
            self.kinds[kind] += 1
            self.started_at[rid] = time.monotonic()
            self.tasks.append(asyncio.create_task(self._finish(rid, handle)))
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=START_EVERY_S)

    async def _finish(self, rid: str, handle: RunHandle) -> None:
        self.results[rid] = await handle.result()
        self.ended_at[rid] = time.monotonic()

    async def _decider(self) -> None:
        while True:
            listing = await self.supervisor.pending_approvals()
            for row in listing.approvals:
                try:
                    await self.supervisor.decide(row.approval.approval_id, approve=True, by="ops")
                    self.decided += 1
                except DecisionRefused:
                    pass  # decided already (a listing a moment old)
            if self.stopping.is_set() and len(self.results) == len(self.handles):
                return
            await asyncio.sleep(0.2)  # a person's pace, not a wait for a condition

    async def finished(self) -> None:
        await asyncio.gather(*self.tasks)


def between(times: dict[str, float], start: float, end: float) -> int:
    return sum(1 for t in times.values() if start <= t < end)


async def test_sixty_seconds_without_the_mirror_loses_nothing(
    client: Client, settings: Settings, schemas: tuple[str, str], tmp_path: Path
) -> None:
    live_schema, rebuild_schema = schemas
    upgrade(pg_url(live_schema))
    port = free_port()
    proxy = TcpProxy(port, (PG_HOST, PG_PORT))
    proxy.start()
    mirror_url = pg_url(live_schema, port=port)
    settings = settings.model_copy(update={"mirror": MirrorSettings(enabled=True, url=mirror_url)})
    settings.home.mkdir(parents=True, exist_ok=True)
    writer = MirrorWriter(mirror_url, settings.mirror)  # the worker's defaults: backoff to 10 s
    writer.start()
    load = Load(Supervisor(client, settings), settings)
    try:
        async with build_worker(client, settings, sinks=[MetricsSink(), writer]):
            began = time.monotonic()
            await load.start()
            await eventually(lambda: len(load.results) >= 5, timeout=120, what="runs finishing")
            await asyncio.sleep(max(0.0, WARM_S - (time.monotonic() - began)))  # load runs meanwhile

            proxy.stop()
            down_at = time.monotonic()
            await eventually(lambda: not writer.stats().connected, timeout=30, what="the writer failing")
            # The outage is a length of time, not a condition: the load runs through it.
            await asyncio.sleep(OUTAGE_S - (time.monotonic() - down_at))
            backlog_at_peak = writer.stats().backlog
            proxy.start()
            back_at = time.monotonic()
            await load.stop()
            started = set(load.handles)

            def caught_up() -> bool:
                stats = writer.stats()
                return stats.connected and stats.backlog == 0 and len(
                    table_rows(pg_url(live_schema), tool_runs, ("run_id",)).keys() & {(r,) for r in started}
                ) == len(started)

            await eventually(caught_up, timeout=120, what="the mirror catching up")
            catch_up_s = time.monotonic() - back_at

            await asyncio.wait_for(load.finished(), timeout=240)
            failures = [(r.run_id, r.state.value, r.error) for r in load.results.values()
                        if r.state is not RunState.SUCCEEDED]
            assert not failures, (len(failures), failures[:3])
            await eventually(
                lambda: processes_of_runs(set(load.handles)) == [], timeout=30,
                what="no tool process left",
            )
            await eventually(
                lambda: writer.stats().backlog == 0, timeout=60, what="the last writes"
            )

            rebuild_settings = settings.model_copy(
                update={"mirror": MirrorSettings(enabled=True, url=pg_url(rebuild_schema))}
            )
            skipped: list[str] = []
            rebuilt_runs = await rebuild_from_temporal(
                rebuild_settings, run_ids=sorted(started), on_skip=lambda r, e: skipped.append(f"{r}: {e}")
            )
            assert not skipped and rebuilt_runs == len(started)

            async def same_rows() -> bool:
                live, rebuilt = await asyncio.gather(
                    asyncio.to_thread(snapshot, pg_url(live_schema)),
                    asyncio.to_thread(snapshot, pg_url(rebuild_schema)),
                )
                found = differences(live, rebuilt)
                assert not found, f"{len(found)} differences: {found[:8]}"
                return True

            await eventually(same_rows, timeout=30, interval=1.0, what="the mirror equal to a rebuild")
            live_rows = snapshot(pg_url(live_schema))
            counts = {name: len(rows) for name, rows in live_rows.items()}
            rebuilt_runs_rows = snapshot(pg_url(rebuild_schema))["tool_runs"]
            assert all(row[c] is None for row in rebuilt_runs_rows.values() for c in HEARTBEAT_ONLY)
            kept_beats = sum(1 for row in live_rows["tool_runs"].values() if row["last_heartbeat_at"])
            stats = writer.stats()
        during = between(load.started_at, down_at, back_at)
        ended_during = between(load.ended_at, down_at, back_at)
        print(
            f"\nchaos mirror outage: PostgreSQL unreachable {back_at - down_at:.0f}s under load; "
            f"{len(started)} runs in all {dict(sorted(load.kinds.items()))}, {during} started and "
            f"{ended_during} finished during the outage, {load.decided} approvals decided; "
            f"failures 0; processes left 0; writer backlog at the end of the outage {backlog_at_peak}, "
            f"{stats.failures_total} failed writes, {stats.dropped_events_total} events dropped; "
            f"caught up {catch_up_s:.1f}s after the proxy came back; rows {counts}, "
            f"identical to a rebuild from Temporal (but for {kept_beats} finished runs' last "
            "heartbeat time, which only the live mirror knows)"
        )
    finally:
        load.stopping.set()
        for task in load.tasks:
            task.cancel()
        proxy.stop()
        await asyncio.to_thread(writer.stop, 10.0)
