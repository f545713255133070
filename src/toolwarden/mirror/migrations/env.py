"""Alembic environment: the URL (or an open connection) comes from the programmatic Config."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from toolwarden.mirror.engine import make_engine
from toolwarden.mirror.schema import Base

config = context.config
target_metadata = Base.metadata


def _driver(connection: Connection) -> Any:
    driver = connection.connection.driver_connection
    assert driver is not None
    return driver


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes["url"],
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.attributes["url"], write_lock=True)  # concurrent upgrades wait, not fail
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # A batch migration copies a table and drops the original; with foreign keys on,
                # that drop would cascade to the child rows. The pragma only works outside a
                # transaction, so it goes straight to the driver before anything begins.
                _driver(conn).execute("PRAGMA foreign_keys = OFF")
            _run(conn)
            conn.commit()
            if sqlite:
                _driver(conn).execute("PRAGMA foreign_keys = ON")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
