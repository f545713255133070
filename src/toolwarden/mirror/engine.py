"""Engines for the mirror database: SQLite (WAL, busy_timeout, foreign keys) or PostgreSQL."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_CONNECT_TIMEOUT_S = 5


def make_engine(
    url: str,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
    write_lock: bool = False,
    pre_ping: bool = True,
) -> Engine:
    """An engine for `url`; SQLite connections get WAL, `busy_timeout` and `foreign_keys=ON`.

    `write_lock=True` opens every SQLite transaction with `BEGIN IMMEDIATE`, taking the write
    lock up front (waiting up to `busy_timeout` for it) so a write transaction never fails half
    way on a lock upgrade: for the mirror writer. Without it transactions start with a plain
    (deferred) `BEGIN`, so readers (`toolwarden db status`, dashboard queries) never take the
    write lock nor wait on the writer. `pre_ping=False` skips the liveness `SELECT 1` on each
    pool checkout, for a caller that disposes the engine and retries on any error.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        # Transactions are managed by SQLAlchemy, with BEGIN emitted by the hook below so that
        # the pysqlite driver's own implicit transaction handling stays out of the way.
        connect_args["check_same_thread"] = False
        connect_args["timeout"] = busy_timeout_ms / 1000
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=pre_ping)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            assert isinstance(dbapi_conn, sqlite3.Connection)
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                cursor.execute("PRAGMA foreign_keys = ON")
                if parsed.database and parsed.database != ":memory:":
                    cursor.execute("PRAGMA journal_mode = WAL")
                    cursor.execute("PRAGMA synchronous = NORMAL")
            finally:
                cursor.close()

        begin = "BEGIN IMMEDIATE" if write_lock else "BEGIN"

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine
    if backend == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = connect_timeout_s
    return create_engine(url, connect_args=connect_args, pool_pre_ping=pre_ping)


def redact(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)
