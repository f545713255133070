"""SQLite engines: readers never take the write lock; the writer's transactions take it up front."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from toolwarden.mirror import make_engine, upgrade
from toolwarden.mirror.schema import tool_runs


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    path = tmp_path / "mirror.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def other(sqlite_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection that never waits for a lock (busy timeout 0)."""
    conn = sqlite3.connect(sqlite_path, isolation_level=None, timeout=0)
    yield conn
    conn.close()


def test_a_read_transaction_does_not_take_the_write_lock(
    sqlite_path: Path, other: sqlite3.Connection
) -> None:
    engine = make_engine(f"sqlite:///{sqlite_path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(tool_runs)).scalar_one() == 0
            assert conn.in_transaction()
            other.execute("BEGIN IMMEDIATE")  # a writer gets the lock while the read is open
            other.execute("ROLLBACK")
    finally:
        engine.dispose()


def test_the_writers_engine_takes_the_write_lock_at_begin(
    sqlite_path: Path, other: sqlite3.Connection
) -> None:
    engine = make_engine(f"sqlite:///{sqlite_path}", write_lock=True, pre_ping=False)
    try:
        with engine.begin() as conn:
            conn.execute(select(func.count()).select_from(tool_runs)).scalar_one()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        engine.dispose()
