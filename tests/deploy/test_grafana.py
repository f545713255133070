"""deploy/grafana: the dashboard's SQL panels return the right figures from a real PostgreSQL
mirror, its PromQL panels compute the right values in `promtool test rules`, and everything it
refers to (data sources, metric names, mounted paths) exists.

Grafana itself is not run: its macros are expanded here exactly as its PostgreSQL data source
documents them ($__timeFilter(c) -> c BETWEEN 'from' AND 'to'; $__timeGroupAlias(c, '1h') ->
floor(extract(epoch from c)/3600)*3600 AS "time"; a multi-value $var -> 'a','b'), and its
range variables get fixed values ($__rate_interval 5m, $__range 1h).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric
from sqlalchemy import Engine, text

from tests.mirror.conftest import make_approval, make_status, pg_schema, pg_url
from tests.ops.conftest import require_tool
from tests.support import REPO
from toolwarden import metrics
from toolwarden.mirror import apply_updates, make_engine, upgrade
from toolwarden.mirror.queries import PENDING_APPROVALS_BY_AGE
from toolwarden.models import ApprovalState, RunState, RunUpdate

__all__ = ["pg_schema"]  # the fixture, used by `mirror` below

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "toolwarden.json"
PROM_UID, SQL_UID = "toolwarden-prometheus", "toolwarden-mirror"
NOW = datetime.now(UTC).replace(microsecond=0)
FROM, TO = NOW - timedelta(hours=24), NOW + timedelta(minutes=1)  # the dashboard's default range
TOOLS = ("deploy", "backup")


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def targets(uid: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query on data source `uid`, rows skipped."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["uid"] == uid:
                found.append((f"{panel['title']} [{target['refId']}]", target))
    return found


def expand_sql(sql: str, tool_names: tuple[str, ...] = TOOLS) -> str:
    """Grafana's PostgreSQL macros and variables, as Grafana expands them."""

    def stamp(at: datetime) -> str:
        return at.strftime("%Y-%m-%dT%H:%M:%SZ")

    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{stamp(FROM)}' AND '{stamp(TO)}'",
        sql,
    )
    sql = re.sub(
        r"\$__timeGroupAlias\(([^,]+),\s*'1h'\)",
        lambda m: f'floor(extract(epoch from {m.group(1)})/3600)*3600 AS "time"',
        sql,
    )
    sql = sql.replace("$tool_name", ", ".join(f"'{name}'" for name in tool_names))
    assert "$" not in sql, f"a Grafana macro this test does not expand: {sql}"
    return sql


# -- the dashboard and its provisioning -----------------------------------------------------------


def test_every_query_uses_a_provisioned_data_source() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "toolwarden.yml").read_text())
    uids = {source["uid"]: source["type"] for source in provisioned["datasources"]}
    assert uids == {PROM_UID: "prometheus", SQL_UID: "grafana-postgresql-datasource"}
    data = dashboard()
    variables = [v["datasource"] for v in data["templating"]["list"]]
    panels = [p for p in data["panels"] if p["type"] != "row"]
    for source in variables + [p["datasource"] for p in panels]:
        assert uids[source["uid"]] == source["type"]
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_provisions_the_dashboard() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    grafana = services["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    binds = [volume.rsplit(":", 1)[0] for volume in grafana["volumes"] if volume.startswith("./")]
    mounts = dict(bind.split(":", 1) for bind in binds)
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "toolwarden.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "toolwarden.yml").read_text())
    urls = {source["uid"]: source["url"] for source in sources["datasources"]}
    assert urls[PROM_UID] == "http://prometheus:9090" and "prometheus" in services
    assert urls[SQL_UID] == "mirror-db:5432" and "mirror-db" in services
    assert "MIRROR_DB_PASSWORD" in grafana["environment"]


def test_docker_compose_accepts_the_monitoring_profile() -> None:
    require_tool("docker-compose", "docker-compose")
    result = subprocess.run(
        ["docker-compose", "--profile", "monitoring", "config", "-q"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pending_list_is_the_mirrors_own_query() -> None:
    sql = dict(targets(SQL_UID))["Approvals waiting, oldest first [A]"]["rawSql"]
    assert sql == PENDING_APPROVALS_BY_AGE.postgresql


# -- SQL panels against a real mirror in PostgreSQL ------------------------------------------------


@pytest.fixture
def mirror(pg_schema: str) -> Iterator[Engine]:
    """A mirror holding runs and approvals of two tools, written by the projection functions."""
    url = pg_url(pg_schema)
    upgrade(url)
    engine = make_engine(url)
    minute = timedelta(minutes=1)
    hour = NOW.replace(minute=0, second=0) - timedelta(hours=2)  # runs in this hour and the next

    def ended(run_id: str, tool: str, state: RunState, start: datetime, **kw: Any) -> RunUpdate:
        status = make_status(run_id, tool=tool, state=state, started_at=start, ended_at=start + minute, **kw)
        return RunUpdate(status=status, events=[])

    waits = {"d1": 60, "d2": 120, "d3": 600}  # seconds from request to decision
    decided = {
        run_id: [
            make_approval(
                run_id, state=ApprovalState.APPROVED, requested_at=hour,
                decided_after=timedelta(seconds=seconds), by="ann",
            )
        ]
        for run_id, seconds in waits.items()
    }
    updates = [
        ended("d1", "deploy", RunState.SUCCEEDED, hour + minute, approvals=decided["d1"]),
        ended("d2", "deploy", RunState.SUCCEEDED, hour + 2 * minute, approvals=decided["d2"]),
        ended("d3", "deploy", RunState.HUNG, hour + 3 * minute, approvals=decided["d3"]),
        ended("d4", "deploy", RunState.HUNG, hour + 61 * minute),
        ended("b1", "backup", RunState.SUCCEEDED, hour + 5 * minute),
        ended("b2", "backup", RunState.FAILED, hour + 62 * minute),
        ended("old", "backup", RunState.HUNG, NOW - timedelta(days=3)),  # before the range
        RunUpdate(status=make_status(
            "w1", tool="deploy", state=RunState.WAITING_APPROVAL, started_at=hour + 100 * minute,
            approvals=[make_approval("w1", "gate", requested_at=NOW - 20 * minute)],
        )),
        RunUpdate(status=make_status(
            "w2", tool="backup", state=RunState.WAITING_APPROVAL, started_at=hour + 101 * minute,
            approvals=[make_approval("w2", "wipe", requested_at=NOW - 5 * minute)],
        )),
    ]
    with engine.begin() as conn:
        apply_updates(conn, updates)
    try:
        yield engine
    finally:
        engine.dispose()


def rows(engine: Engine, title: str, tool_names: tuple[str, ...] = TOOLS) -> list[dict[str, Any]]:
    target = dict(targets(SQL_UID))[title]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(expand_sql(target["rawSql"], tool_names)))]


def test_runs_by_state(mirror: Engine) -> None:
    got = {r["state"]: r["runs"] for r in rows(mirror, "Runs by state [A]")}
    assert got == {"succeeded": 3, "hung": 2, "failed": 1, "waiting_approval": 2}
    deploy_only = {r["state"]: r["runs"] for r in rows(mirror, "Runs by state [A]", ("deploy",))}
    assert deploy_only == {"succeeded": 2, "hung": 2, "waiting_approval": 1}


def test_runs_started_per_hour_by_state(mirror: Engine) -> None:
    got = rows(mirror, "Runs started per hour, by state [A]")
    first = int((NOW.replace(minute=0, second=0) - timedelta(hours=2)).timestamp())
    by_hour: dict[int, dict[str, int]] = {}
    for row in got:
        assert set(row) == {"time", "metric", "value"}  # what Grafana's time_series format reads
        by_hour.setdefault(int(row["time"]), {})[row["metric"]] = row["value"]
    assert by_hour[first] == {"succeeded": 3, "hung": 1}
    assert by_hour[first + 3600] == {"hung": 1, "failed": 1, "waiting_approval": 2}
    assert set(by_hour) == {first, first + 3600}
    assert [int(r["time"]) for r in got] == sorted(int(r["time"]) for r in got)


def test_approvals_waiting_oldest_first(mirror: Engine) -> None:
    got = rows(mirror, "Approvals waiting, oldest first [A]")
    assert [(r["approval_id"], r["tool_name"]) for r in got] == [("w1/gate", "deploy"), ("w2/wipe", "backup")]
    assert 20 * 60 <= got[0]["age_seconds"] < 25 * 60
    assert 5 * 60 <= got[1]["age_seconds"] < 10 * 60


def test_approvals_waiting_count_and_oldest_age(mirror: Engine) -> None:
    (row,) = rows(mirror, "Approvals waiting [A]")
    assert row["waiting"] == 2
    assert 20 * 60 <= float(row["oldest_seconds"]) < 25 * 60


def test_time_to_decision_p50_p95(mirror: Engine) -> None:
    (row,) = rows(mirror, "Time to decision per tool, p50 / p95 [A]")
    # 60, 120 and 600 s: the median is 120 s; p95 interpolates 90% of the way from 120 to 600.
    assert row["tool_name"] == "deploy" and row["decided"] == 3
    assert row["p50_seconds"] == pytest.approx(120.0)
    assert row["p95_seconds"] == pytest.approx(552.0)


def test_hung_runs_per_tool(mirror: Engine) -> None:
    got = {
        r["tool_name"]: (r["finished"], r["hung"], r["hang_rate"])
        for r in rows(mirror, "Hung runs per tool [A]")
    }
    # The backup run hung three days ago is outside the range.
    assert got == {"deploy": (4, 2, 0.5), "backup": (2, 0, 0.0)}


def test_every_sql_panel_is_tested() -> None:
    tested = {
        "Runs by state [A]", "Runs started per hour, by state [A]", "Approvals waiting, oldest first [A]",
        "Approvals waiting [A]", "Time to decision per tool, p50 / p95 [A]", "Hung runs per tool [A]",
    }
    assert {title for title, _ in targets(SQL_UID)} == tested


# -- PromQL panels in promtool ----------------------------------------------------------------


def expand_promql(expr: str) -> str:
    expr = expr.replace('tool=~"$tool"', 'tool=~".*"')
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
    assert "$" not in expr, f"a Grafana variable this test does not expand: {expr}"
    return expr


# Series every minute for an hour, evaluated at 60m: two workers, two tools.
INPUT_SERIES = [
    ('toolwarden_worker_ready{instance="w1"}', "1x60"),
    ('toolwarden_worker_ready{instance="w2"}', "1x60"),
    ('toolwarden_tools_running{instance="w1",tool="deploy"}', "3x60"),
    ('toolwarden_tools_running{instance="w2",tool="backup"}', "2x60"),
    ('toolwarden_approvals_pending{instance="w1",tool="deploy"}', "4x60"),
    ('toolwarden_approvals_pending{instance="w2",tool="backup"}', "1x60"),
    ('toolwarden_approval_oldest_pending_age_seconds{instance="w1",tool="deploy"}', "0+60x60"),
    ('toolwarden_approval_oldest_pending_age_seconds{instance="w2",tool="backup"}', "30x60"),
    ('toolwarden_hung_kills_total{instance="w1",tool="deploy"}', "0+1x60"),
    ('toolwarden_hung_kills_total{instance="w2",tool="backup"}', "0+2x60"),
    ('toolwarden_mirror_lag_seconds{instance="w1"}', "0x60"),
    ('toolwarden_mirror_lag_seconds{instance="w2"}', "7x60"),
    # 1 run/s succeeded, 0.5/s failed (per minute: 60 and 30), over both workers.
    ('toolwarden_runs_ended_total{instance="w1",tool="deploy",state="succeeded"}', "0+30x60"),
    ('toolwarden_runs_ended_total{instance="w2",tool="backup",state="succeeded"}', "0+30x60"),
    ('toolwarden_runs_ended_total{instance="w1",tool="deploy",state="failed"}', "0+30x60"),
    # Decisions at 10/s: half within 60 s, all within 300 s.
    *[
        (f'toolwarden_approval_wait_seconds_bucket{{instance="w1",tool="deploy",le="{le}"}}', values)
        for le, values in (("30", "0x60"), ("60", "0+300x60"), ("300", "0+600x60"), ("+Inf", "0+600x60"))
    ],
    # Resumes at 10/s: half within 0.25 s, all within 1 s.
    *[
        (f'toolwarden_decision_to_resume_seconds_bucket{{instance="w1",tool="deploy",le="{le}"}}', values)
        for le, values in (("0.1", "0x60"), ("0.25", "0+300x60"), ("0.5", "0+300x60"), ("1", "0+600x60"),
                           ("+Inf", "0+600x60"))
    ],
]

EXPECTED: dict[str, list[tuple[str, float]]] = {
    "Workers ready [A]": [("{}", 2)],
    "Tools running [A]": [("{}", 5)],
    "Approvals waiting [A]": [("{}", 5)],
    "Oldest approval waiting [A]": [("{}", 3600)],
    "Hung kills (range) [A]": [("{}", 180)],
    "Mirror lag [A]": [("{}", 7)],
    "Runs ended by state [A]": [('{state="failed"}', 0.5), ('{state="succeeded"}', 1)],
    "Hung kills by tool [A]": [('{tool="backup"}', 10), ('{tool="deploy"}', 5)],
    "Approvals waiting and the oldest's age [A]": [("{}", 5)],
    "Approvals waiting and the oldest's age [B]": [("{}", 3600)],
    # Rank 5 of 10/s is the top of (30, 60]; rank 9.5 is 4.5 of the 5 in (60, 300]: 276.
    "Time to decision p50 / p95 [A]": [("{}", 60)],
    "Time to decision p50 / p95 [B]": [("{}", 276)],
    # Rank 5 is the top of (0.1, 0.25]; rank 9.5 is 4.5 of the 5 in (0.5, 1]: 0.95.
    "Resume latency p50 / p95 [A]": [("{}", 0.25)],
    "Resume latency p50 / p95 [B]": [("{}", 0.95)],
}


def exported_sample_names() -> set[str]:
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    family: Metric
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def test_promql_uses_metrics_toolwarden_exports() -> None:
    exported = exported_sample_names()
    for title, target in targets(PROM_UID):
        for name in re.findall(r"\btoolwarden_[a-z0-9_]+", target["expr"]):
            assert name in exported, f"{title} uses {name}, which toolwarden never exports"
    for variable in dashboard()["templating"]["list"]:
        for name in re.findall(r"\btoolwarden_[a-z0-9_]+", variable["definition"]):
            assert name in exported, variable["name"]


def test_promtool_computes_every_panel(tmp_path: Path) -> None:
    require_tool("promtool", "prometheus")
    queries = dict(targets(PROM_UID))
    assert set(queries) == set(EXPECTED), "every PromQL target needs an expected value here"
    (tmp_path / "none.yml").write_text("groups: []\n")
    tests = {
        "rule_files": ["none.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in INPUT_SERIES],
            "promql_expr_test": [
                {
                    "expr": expand_promql(queries[title]["expr"]),
                    "eval_time": "60m",
                    "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
                }
                for title, samples in EXPECTED.items()
            ],
        }],
    }
    (tmp_path / "panels.test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        ["promtool", "test", "rules", "panels.test.yml"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
