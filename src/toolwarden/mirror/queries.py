"""The dashboard queries, one SQL text per database; docs/database-schema.md quotes them verbatim.

Each takes `:since` (an aware datetime: only rows from then on count) except the pending list,
which always shows every pending approval. Run them with `run_dashboard_query`, or paste them
into Grafana, Metabase or psql, replacing `:since` with your time filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text

from toolwarden.mirror.schema import UTCDateTime


@dataclass(frozen=True)
class DashboardQuery:
    name: str
    title: str
    description: str
    sqlite: str
    postgresql: str

    def sql(self, dialect: str) -> str:
        if dialect == "sqlite":
            return self.sqlite
        if dialect == "postgresql":
            return self.postgresql
        raise ValueError(f"no dashboard query for {dialect!r}")


PENDING_APPROVALS_BY_AGE = DashboardQuery(
    name="pending_approvals_by_age",
    title="Pending approvals by age",
    description="Every approval still waiting for a person, oldest first, with its age.",
    sqlite="""\
SELECT a.approval_id, a.run_id, r.tool_name, a.summary, a.requested_at, a.expires_at,
       CAST((julianday('now') - julianday(a.requested_at)) * 86400 AS INTEGER) AS age_seconds
FROM approvals AS a
JOIN tool_runs AS r ON r.run_id = a.run_id
WHERE a.state = 'pending'
ORDER BY a.requested_at, a.approval_id""",
    postgresql="""\
SELECT a.approval_id, a.run_id, r.tool_name, a.summary, a.requested_at, a.expires_at,
       CAST(EXTRACT(EPOCH FROM now() - a.requested_at) AS INTEGER) AS age_seconds
FROM approvals AS a
JOIN tool_runs AS r ON r.run_id = a.run_id
WHERE a.state = 'pending'
ORDER BY a.requested_at, a.approval_id""",
)

RUNS_BY_STATE_PER_TOOL_PER_HOUR = DashboardQuery(
    name="runs_by_state_per_tool_per_hour",
    title="Runs by state per tool per hour",
    description="How many runs each tool started in each hour (UTC), by their current state.",
    sqlite="""\
SELECT strftime('%Y-%m-%dT%H:00:00Z', started_at) AS hour, tool_name, state,
       COUNT(*) AS runs
FROM tool_runs
WHERE started_at >= :since
GROUP BY 1, tool_name, state
ORDER BY 1, tool_name, state""",
    postgresql="""\
SELECT to_char(date_trunc('hour', started_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:00:00"Z"')
         AS hour,
       tool_name, state, COUNT(*) AS runs
FROM tool_runs
WHERE started_at >= :since
GROUP BY 1, tool_name, state
ORDER BY 1, tool_name, state""",
)

HANG_RATE_PER_TOOL = DashboardQuery(
    name="hang_rate_per_tool",
    title="Hang rate per tool",
    description=(
        "Of the runs that finished, the share that ended hung (killed by the hang detector "
        "with no retries left)."
    ),
    sqlite="""\
SELECT tool_name, COUNT(*) AS finished,
       SUM(CASE WHEN state = 'hung' THEN 1 ELSE 0 END) AS hung,
       CAST(SUM(CASE WHEN state = 'hung' THEN 1 ELSE 0 END) AS REAL) / COUNT(*) AS hang_rate
FROM tool_runs
WHERE ended_at IS NOT NULL AND started_at >= :since
GROUP BY tool_name
ORDER BY tool_name""",
    postgresql="""\
SELECT tool_name, COUNT(*) AS finished,
       SUM(CASE WHEN state = 'hung' THEN 1 ELSE 0 END) AS hung,
       CAST(SUM(CASE WHEN state = 'hung' THEN 1 ELSE 0 END) AS DOUBLE PRECISION) / COUNT(*)
         AS hang_rate
FROM tool_runs
WHERE ended_at IS NOT NULL AND started_at >= :since
GROUP BY tool_name
ORDER BY tool_name""",
)

APPROVAL_DECISION_TIME = DashboardQuery(
    name="approval_decision_time",
    title="Time from request to decision",
    description=(
        "For approvals a person decided (approved or rejected; not expired or cancelled), "
        "the seconds between the request and the decision, per tool and outcome."
    ),
    sqlite="""\
SELECT r.tool_name, a.state, COUNT(*) AS decided,
       AVG((julianday(a.decided_at) - julianday(a.requested_at)) * 86400.0) AS avg_seconds,
       MIN((julianday(a.decided_at) - julianday(a.requested_at)) * 86400.0) AS min_seconds,
       MAX((julianday(a.decided_at) - julianday(a.requested_at)) * 86400.0) AS max_seconds
FROM approvals AS a
JOIN tool_runs AS r ON r.run_id = a.run_id
WHERE a.state IN ('approved', 'rejected') AND a.decided_at >= :since
GROUP BY r.tool_name, a.state
ORDER BY r.tool_name, a.state""",
    postgresql="""\
SELECT r.tool_name, a.state, COUNT(*) AS decided,
       CAST(AVG(EXTRACT(EPOCH FROM a.decided_at - a.requested_at)) AS DOUBLE PRECISION)
         AS avg_seconds,
       CAST(MIN(EXTRACT(EPOCH FROM a.decided_at - a.requested_at)) AS DOUBLE PRECISION)
         AS min_seconds,
       CAST(MAX(EXTRACT(EPOCH FROM a.decided_at - a.requested_at)) AS DOUBLE PRECISION)
         AS max_seconds
FROM approvals AS a
JOIN tool_runs AS r ON r.run_id = a.run_id
WHERE a.state IN ('approved', 'rejected') AND a.decided_at >= :since
GROUP BY r.tool_name, a.state
ORDER BY r.tool_name, a.state""",
)

QUERIES: dict[str, DashboardQuery] = {
    q.name: q
    for q in (
        PENDING_APPROVALS_BY_AGE,
        RUNS_BY_STATE_PER_TOOL_PER_HOUR,
        HANG_RATE_PER_TOOL,
        APPROVAL_DECISION_TIME,
    )
}


def run_dashboard_query(
    conn: Connection, name: str, *, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Run one dashboard query on `conn` and return its rows as dicts."""
    query = QUERIES[name]
    sql = query.sql(conn.dialect.name)
    stmt = text(sql)
    params: dict[str, Any] = {}
    if ":since" in sql:
        if since is None:
            raise ValueError(f"query {name!r} needs since=<aware datetime>")
        stmt = stmt.bindparams(bindparam("since", type_=UTCDateTime()))
        params["since"] = since
    return [dict(row._mapping) for row in conn.execute(stmt, params)]
