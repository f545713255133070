"""The writer never blocks or fails a run, and catches up when the database comes back."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from tests.mirror.conftest import (
    PG_HOST,
    PG_PORT,
    T0,
    live,
    make_events,
    make_status,
    pg_url,
    wait_for,
)
from tests.mirror.tcpproxy import TcpProxy
from tests.support import free_port
from toolwarden.config import MirrorSettings
from toolwarden.mirror import MirrorWriter, make_engine, upgrade
from toolwarden.mirror.schema import run_events, tool_runs
from toolwarden.models import LiveDetails, RunState, RunUpdate

FAST = {"retry_initial": 0.05, "retry_max": 0.3}


def settings(interval: float = 0.3, max_backlog: int = 100_000) -> MirrorSettings:
    return MirrorSettings(heartbeat_write_interval=timedelta(seconds=interval), max_backlog=max_backlog)


@pytest.fixture
def writers() -> Iterator[Callable[..., MirrorWriter]]:
    made: list[MirrorWriter] = []

    def make(url: str, mirror: MirrorSettings | None = None, **kwargs: object) -> MirrorWriter:
        writer = MirrorWriter(url, mirror or settings(), **{**FAST, **kwargs})  # type: ignore[arg-type]
        writer.start()
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.stop(timeout=2.0)


def count_runs(url: str) -> int:
    """Rows in tool_runs, or -1 while the tables do not exist yet."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tool_runs)).scalar_one())
    except DBAPIError:
        return -1
    finally:
        engine.dispose()


def run_column(url: str, run_id: str, column: str) -> object:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(tool_runs.c[column]).where(tool_runs.c.run_id == run_id)
            ).scalar_one_or_none()
    finally:
        engine.dispose()


def count_events(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(run_events)).scalar_one())
    finally:
        engine.dispose()


def updates(n_runs: int, version: int = 0, events: int = 3) -> list[RunUpdate]:
    return [
        RunUpdate(
            status=make_status(f"run-{i}", updated_at=T0 + timedelta(seconds=version)),
            events=make_events(version * events, (version + 1) * events),
        )
        for i in range(n_runs)
    ]


def test_writes_updates_and_reports_stats(db_url: str, writers) -> None:
    writer = writers(db_url)
    for update in updates(5):
        writer.run_changed(update)
    wait_for(lambda: count_runs(db_url) == 5 and count_events(db_url) == 15)
    stats = wait_for(lambda: (s := writer.stats()).backlog == 0 and s)
    assert stats.connected and stats.lag_seconds is None and stats.last_error is None
    assert stats.written_total >= 5 and stats.events_written_total == 15
    assert stats.last_write_at is not None


def test_submit_and_heartbeat_never_raise(tmp_path: Path, writers) -> None:
    writer = writers(f"sqlite:///{tmp_path / 'missing' / 'm.db'}")
    writer.run_changed(None)  # type: ignore[arg-type]
    writer.heartbeat("r1", None)  # type: ignore[arg-type]
    writer.run_changed(updates(1)[0])
    assert writer.stats().backlog == 1 + 3  # the snapshot and its three events


def test_missing_sqlite_directory_then_created(tmp_path: Path, writers) -> None:
    directory = tmp_path / "later"
    url = f"sqlite:///{directory / 'mirror.db'}"
    writer = writers(url)
    for update in updates(3):
        writer.run_changed(update)
    stats = wait_for(lambda: (s := writer.stats()).failures_total >= 2 and s)
    assert not stats.connected and stats.backlog == 3 * 4
    assert stats.lag_seconds is not None and stats.lag_seconds > 0
    assert stats.last_error and "unable to open database file" in stats.last_error
    # Submitting while the database is away stays instant and keeps the newest snapshot.
    for update in updates(3, version=1):
        writer.run_changed(update)
    directory.mkdir()
    wait_for(lambda: count_runs(url) == 3 and count_events(url) == 18)
    assert run_column(url, "run-0", "updated_at") == T0 + timedelta(seconds=1)
    stats = wait_for(lambda: (s := writer.stats()).backlog == 0 and s)
    assert stats.connected and stats.lag_seconds is None


def test_exclusive_sqlite_lock_is_waited_out(tmp_path: Path, writers) -> None:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    upgrade(url)
    holder = sqlite3.connect(tmp_path / "mirror.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        writer = writers(url, busy_timeout_ms=50)
        writer.run_changed(updates(1)[0])
        wait_for(lambda: writer.stats().failures_total >= 2)
        started = time.monotonic()
        for update in updates(50, version=1):
            writer.run_changed(update)
        assert time.monotonic() - started < 1.0, "submit must not wait for the database"
        assert "locked" in (writer.stats().last_error or "")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_for(lambda: count_runs(url) == 50)
    wait_for(lambda: writer.stats().backlog == 0)


def test_postgres_down_then_back_then_down_again(pg_schema: str, writers) -> None:
    port = free_port()
    proxy = TcpProxy(port, (PG_HOST, PG_PORT))
    upgrade(pg_url(pg_schema))
    url = pg_url(pg_schema, port=port)
    writer = writers(url)
    try:
        for update in updates(4):
            writer.run_changed(update)
        stats = wait_for(lambda: (s := writer.stats()).failures_total >= 1 and s)
        assert not stats.connected and stats.backlog > 0
        proxy.start()
        wait_for(lambda: count_runs(pg_url(pg_schema)) == 4)
        wait_for(lambda: writer.stats().connected and writer.stats().backlog == 0)
        # PostgreSQL goes away again mid-stream: pooled connections die with it.
        proxy.stop()
        failures = writer.stats().failures_total
        for update in updates(8, version=1):
            writer.run_changed(update)
        wait_for(lambda: writer.stats().failures_total > failures)
        proxy.start()
        wait_for(lambda: count_runs(pg_url(pg_schema)) == 8)
        wait_for(lambda: count_events(pg_url(pg_schema)) == 4 * 3 + 8 * 3)
        wait_for(lambda: writer.stats().backlog == 0)
    finally:
        proxy.stop()


def test_heartbeats_are_throttled_per_run_last_value_wins(db_url: str, writers) -> None:
    writer = writers(db_url, settings(interval=0.4))
    writer.run_changed(RunUpdate(status=make_status("a", pid=None)))
    writer.run_changed(RunUpdate(status=make_status("b", pid=None)))
    wait_for(lambda: count_runs(db_url) == 2)
    for i in range(100):
        writer.heartbeat("a", live(pid=1000 + i, message=f"beat {i}"))
    writer.heartbeat("b", live(pid=7, message="only"))
    wait_for(lambda: run_column(db_url, "a", "message") == "beat 99")
    wait_for(lambda: run_column(db_url, "b", "message") == "only")
    assert run_column(db_url, "a", "pid") == 1099
    # At most: a's first beat at once, a's last after the interval, b's one.
    assert writer.stats().heartbeats_written_total <= 3
    # A heartbeat arriving after the run ended is ignored.
    writer.run_changed(RunUpdate(status=make_status("a", state=RunState.SUCCEEDED, ended_at=T0, pid=1099)))
    writer.heartbeat("a", LiveDetails(pid=5, message="late"))
    wait_for(lambda: run_column(db_url, "a", "state") == "succeeded")
    wait_for(lambda: writer.stats().backlog == 0)  # the late beat is taken, and dropped
    assert run_column(db_url, "a", "message") != "late"


def test_full_backlog_sheds_old_events_but_keeps_latest_snapshots(tmp_path: Path) -> None:
    directory = tmp_path / "later"
    url = f"sqlite:///{directory / 'mirror.db'}"
    # Not started yet: no batch is in flight, so the count of shed events is exact.
    writer = MirrorWriter(url, settings(max_backlog=40), **FAST)  # type: ignore[arg-type]
    for version in range(10):
        for update in updates(5, version=version, events=4):
            writer.run_changed(update)
    stats = writer.stats()
    assert stats.backlog <= 40
    assert stats.dropped_events_total == 5 * 10 * 4 + 5 - 40
    writer.start()
    try:
        directory.mkdir()
        wait_for(lambda: count_runs(url) == 5)
        for i in range(5):
            assert run_column(url, f"run-{i}", "updated_at") == T0 + timedelta(seconds=9)
        wait_for(lambda: writer.stats().backlog == 0)
        assert "db rebuild" in (writer.stats().last_error or "")
    finally:
        writer.stop(timeout=2.0)


def test_stop_flushes_what_is_queued(db_url: str) -> None:
    writer = MirrorWriter(db_url, settings(), **FAST)  # type: ignore[arg-type]
    writer.start()
    for version in range(3):
        for update in updates(40, version=version):
            writer.run_changed(update)
    writer.heartbeat("run-0", live(message="final words"))
    writer.stop(timeout=20)
    assert count_runs(db_url) == 40
    assert count_events(db_url) == 40 * 9
    assert run_column(db_url, "run-0", "message") == "final words"
