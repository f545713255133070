"""`toolwarden db`: migrate, inspect and rebuild the SQL mirror."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from toolwarden.cli.common import CliError, settings_of
from toolwarden.errors import one_line

T = TypeVar("T")


def _guard(url: str, action: Callable[[], T]) -> T:
    """Run a database action; any failure becomes one line naming the (redacted) URL."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from toolwarden.mirror.engine import redact

    try:
        return action()
    except CommandError as exc:
        raise CliError(one_line(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(f"mirror database {redact(url)}: {one_line(exc)}") from exc


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite mirror file that does not exist yet, else None."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database).expanduser()
    return None if path.exists() else str(path)


@click.group("db")
def db() -> None:
    """Manage the SQL mirror (schema migrations, status, rebuild from Temporal)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_context
def upgrade_cmd(ctx: click.Context, revision: str) -> None:
    """Migrate the mirror's schema up to REVISION."""
    from toolwarden.mirror.engine import redact
    from toolwarden.mirror.migrate import current, upgrade

    url = settings_of(ctx).mirror_url
    _guard(url, lambda: upgrade(url, revision))
    click.echo(f"mirror {redact(url)} at revision {_guard(url, lambda: current(url))}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_context
def downgrade_cmd(ctx: click.Context, revision: str) -> None:
    """Migrate the mirror's schema down to REVISION (`base` drops every mirror table)."""
    from toolwarden.mirror.engine import redact
    from toolwarden.mirror.migrate import current, downgrade

    url = settings_of(ctx).mirror_url
    _guard(url, lambda: downgrade(url, revision))
    now = _guard(url, lambda: current(url)) or "base (no tables)"
    click.echo(f"mirror {redact(url)} at revision {now}")


@db.command("current")
@click.pass_context
def current_cmd(ctx: click.Context) -> None:
    """Print the revision the mirror's schema is at."""
    from toolwarden.mirror.migrate import current, head_revision

    url = settings_of(ctx).mirror_url
    missing = _missing_sqlite_file(url)
    if missing is not None:
        click.echo(f"none (no mirror database at {missing}: run `toolwarden db upgrade`)")
        return
    revision = _guard(url, lambda: current(url))
    if revision is None:
        click.echo("none (not migrated: run `toolwarden db upgrade`)")
    else:
        click.echo(f"{revision}{' (head)' if revision == head_revision() else ''}")


def _counts(url: str) -> dict[str, Any]:
    from sqlalchemy import func, select

    from toolwarden.mirror.engine import make_engine
    from toolwarden.mirror.schema import approvals, run_events, tool_runs

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(
                select(
                    func.count(),
                    func.max(tool_runs.c.updated_at),
                    func.max(tool_runs.c.mirrored_at),
                )
            ).one()
            approvals_row = conn.execute(
                select(
                    func.count(),
                    func.count().filter(approvals.c.state == "pending"),
                )
            ).one()
            events = conn.execute(select(func.count(), func.max(run_events.c.at))).one()
    finally:
        engine.dispose()
    return {
        "tool_runs": runs[0],
        "approvals": approvals_row[0],
        "pending_approvals": approvals_row[1],
        "run_events": events[0],
        "newest_run_update": _iso(runs[1]),
        "newest_mirror_write": _iso(runs[2]),
        "newest_event": _iso(events[1]),
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def writer_stats(address: str | None, timeout: float = 1.0) -> dict[str, Any] | None:
    """The running worker's mirror writer figures from its /readyz, or None if unreachable."""
    if not address:
        return None
    import asyncio

    import httpx

    from toolwarden.http.health import fetch_readiness

    try:
        report = asyncio.run(fetch_readiness(address, timeout))
    except (httpx.HTTPError, OSError, ValueError):
        return None
    return {
        "state": report.mirror,
        "backlog": report.mirror_backlog,
        "lag_seconds": report.mirror_lag_seconds,
    }


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Schema revision, row counts, newest rows and (if a worker answers) the writer's lag."""
    from toolwarden.mirror.engine import redact
    from toolwarden.mirror.migrate import current, head_revision

    settings = settings_of(ctx)
    url = settings.mirror_url
    missing = _missing_sqlite_file(url)
    unreachable: str | None = None
    revision, counts = None, None
    try:
        revision = None if missing else _guard(url, lambda: current(url))
        counts = _guard(url, lambda: _counts(url)) if revision is not None else None
    except CliError as exc:  # still show what the worker's writer knows: backlog and lag
        unreachable = str(exc)
    writer = writer_stats(settings.worker.health_address)
    report: dict[str, Any] = {
        "error": unreachable,
        "url": redact(url),
        "revision": revision,
        "head": head_revision(),
        "up_to_date": revision == head_revision(),
        "counts": counts,
        "writer": writer,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        if unreachable:
            ctx.exit(1)
        return
    click.echo(f"database:  {report['url']}")
    state = "head" if report["up_to_date"] else f"behind head {report['head']}"
    if unreachable:
        click.echo(f"revision:  unknown ({unreachable})")
    elif missing is not None:
        click.echo("revision:  none (no database file yet: run `toolwarden db upgrade`)")
    elif revision is None:
        click.echo("revision:  none (not migrated: run `toolwarden db upgrade`)")
    else:
        click.echo(f"revision:  {revision} ({state})")
    if counts is not None:
        click.echo(
            f"rows:      {counts['tool_runs']} runs, {counts['approvals']} approvals "
            f"({counts['pending_approvals']} pending), {counts['run_events']} events"
        )
        click.echo(
            f"newest:    run update {counts['newest_run_update'] or '-'}, "
            f"event {counts['newest_event'] or '-'}, "
            f"mirror write {counts['newest_mirror_write'] or '-'}"
        )
    if writer is None:
        click.echo("writer:    no worker answering (lag and backlog unknown)")
    else:
        lag = writer.get("lag_seconds")
        lag_text = "-" if lag is None else f"{float(lag):.1f}s"
        label = writer.get("state") or ("connected" if writer.get("connected") else "disconnected")
        click.echo(f"writer:    {label}, backlog {writer.get('backlog', '-')}, lag {lag_text}")
    if unreachable:
        ctx.exit(1)


@db.command("rebuild")
@click.argument("run_ids", nargs=-1)
@click.pass_context
def rebuild_cmd(ctx: click.Context, run_ids: tuple[str, ...]) -> None:
    """Rebuild the mirror from Temporal: every run it still retains, or only RUN_IDS.

    Run statuses are read with workflow queries, so a worker must be running. Idempotent.
    """
    import asyncio

    from toolwarden.mirror.engine import redact
    from toolwarden.mirror.rebuild import rebuild_from_temporal

    settings = settings_of(ctx)
    url = settings.mirror_url
    skipped: list[str] = []

    def skip(run_id: str, exc: BaseException) -> None:
        skipped.append(f"{run_id}: {one_line(exc)}")

    try:
        written = _guard(
            url,
            lambda: asyncio.run(rebuild_from_temporal(settings, run_ids=run_ids or None, on_skip=skip)),
        )
    except click.ClickException:
        raise
    except Exception as exc:  # Temporal unreachable and the like: one line
        raise CliError(f"rebuild failed: {one_line(exc)}") from exc
    click.echo(f"rebuilt {written} run{'s' if written != 1 else ''} into {redact(url)}")
    for line in skipped:
        click.echo(f"skipped {line}", err=True)
    if skipped and not written:
        raise CliError(f"no run could be read ({len(skipped)} skipped); is a worker running?")
