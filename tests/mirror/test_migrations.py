"""Alembic is the only way the schema changes: upgrade, survive, downgrade, no drift."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, select

from toolwarden.mirror import current, downgrade, head_revision, make_engine, upgrade
from toolwarden.mirror.migrate import script_directory
from toolwarden.mirror.schema import Base, approvals, run_events, tool_runs

FIRST = "3f1c2a7d9b10"
MIRROR_TABLES = {"tool_runs", "approvals", "run_events"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_there_are_at_least_two_revisions_named_by_date_and_slug() -> None:
    scripts = list(script_directory().walk_revisions())
    assert len(scripts) >= 2
    for script in scripts:
        name = script.path.rsplit("/", 1)[-1]
        assert name[:8].isdigit() and name[8] == "_", name


def test_upgrade_on_fresh_database(empty_url: str) -> None:
    assert current(empty_url) is None
    upgrade(empty_url)
    assert current(empty_url) == head_revision()
    assert _tables(empty_url) >= MIRROR_TABLES
    upgrade(empty_url)  # idempotent at head
    assert current(empty_url) == head_revision()


def test_data_written_at_first_revision_survives_upgrade(empty_url: str) -> None:
    upgrade(empty_url, FIRST)
    assert current(empty_url) == FIRST
    engine = make_engine(empty_url)
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    try:
        # Write through the tables as they are at the first revision (reflected), since the
        # models describe head.
        old = MetaData()
        old.reflect(engine)
        assert "profile" not in old.tables["tool_runs"].c
        with engine.begin() as conn:
            conn.execute(
                old.tables["tool_runs"]
                .insert()
                .values(
                    run_id="old-1",
                    tool_name="backup",
                    command=["backup", "--all"],
                    state="succeeded",
                    attempt=2,
                    retry_count=1,
                    pid=99,
                    started_at=started,
                    updated_at=started,
                )
            )
            conn.execute(
                old.tables["approvals"]
                .insert()
                .values(
                    approval_id="old-1/go",
                    run_id="old-1",
                    key="go",
                    summary="go?",
                    source="tool",
                    state="pending",
                    on_expiry="reject",
                    requested_at=started,
                    expires_at=started,
                )
            )
            conn.execute(
                old.tables["run_events"]
                .insert()
                .values(run_id="old-1", seq=1, at=started, kind="started", data={"pid": 99})
            )
        upgrade(empty_url)
        assert current(empty_url) == head_revision()
        with engine.connect() as conn:
            run = conn.execute(select(tool_runs)).one()._asdict()
            assert run["run_id"] == "old-1"
            assert run["command"] == ["backup", "--all"]
            assert (run["attempt"], run["retry_count"], run["pid"]) == (2, 1, 99)
            assert run["started_at"] == started
            assert run["pending_approvals"] == 0  # new column, server default
            assert run["profile"] is None
            approval = conn.execute(select(approvals)).one()._asdict()
            assert (approval["approval_id"], approval["state"]) == ("old-1/go", "pending")
            event = conn.execute(select(run_events)).one()._asdict()
            assert (event["seq"], event["kind"], event["data"]) == (1, "started", {"pid": 99})
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(db_url: str) -> None:
    downgrade(db_url, FIRST)
    assert current(db_url) == FIRST
    downgrade(db_url, "base")
    assert current(db_url) is None
    assert not (MIRROR_TABLES & _tables(db_url))
    upgrade(db_url)
    assert current(db_url) == head_revision()
    assert _tables(db_url) >= MIRROR_TABLES


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": False}
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = make_engine(url, busy_timeout_ms=1234)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
