"""deploy/prometheus: the alert rules pass promtool, fire in promtool's unit tests, use metric
names toolwarden really exports, and each points at a runbook section that exists.

`promtool` comes with Debian's `prometheus` package; the promtool tests are skipped when it
is absent outside CI (the structural checks below always run).
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.ops.conftest import REPO, require_tool
from toolwarden import metrics
from toolwarden.models import ApprovalRecord, RunEvent, RunState, RunStatus, RunUpdate

PROMETHEUS = REPO / "deploy" / "prometheus"
RUNBOOK = REPO / "docs" / "runbook.md"


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120,
        cwd=PROMETHEUS, check=False,
    )


def test_promtool_checks_the_rules() -> None:
    require_tool("promtool", "prometheus")
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_fire_every_alert() -> None:
    require_tool("promtool", "prometheus")
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in rules()}, "every alert needs a firing test"


def test_promtool_checks_the_scrape_config() -> None:
    require_tool("promtool", "prometheus")
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_rule_is_complete_and_has_a_runbook_section() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules():
        name = rule["alert"]
        assert re.fullmatch(r"Toolwarden[A-Z][A-Za-z]+", name), name
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        url = annotations["runbook_url"]
        assert url == f"docs/runbook.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbook.md has no section '{name}'"


def _exported_sample_names() -> set[str]:
    """Every sample name toolwarden exports, after feeding each kind of measurement once."""
    now = datetime.now(UTC)
    status = RunStatus(
        run_id="alerts-names-run", tool_name="alerts-names", argv=["x"],
        state=RunState.WAITING_APPROVAL, started_at=now, updated_at=now,
        approvals=[ApprovalRecord(
            approval_id="alerts-names-run/k", run_id="alerts-names-run", key="k",
            summary="s", requested_at=now, expires_at=now + timedelta(hours=1),
        )],
    )
    metrics.observe_update(RunUpdate(status=status, events=[
        RunEvent(seq=10**9, at=now, kind="run_ended", data={"state": "failed"}),
    ]))
    metrics.attempt_started("alerts-names")
    metrics.tool_heartbeat_age("alerts-names", 1.0)
    metrics.hung_kill("alerts-names")
    metrics.resume_latency("alerts-names", 1.0)
    metrics.attempt_ended("alerts-names", "succeeded")
    metrics.attempt_started("alerts-names")
    metrics.tool_heartbeat_age("alerts-names", 1.0)
    try:
        text = metrics.render().decode()
    finally:
        metrics.attempt_ended("alerts-names", "succeeded")
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_rules_use_metrics_toolwarden_exports() -> None:
    exported = _exported_sample_names()
    for rule in rules():
        for name in re.findall(r"\btoolwarden_[a-z0-9_]+", rule["expr"]):
            assert name in exported, f"{rule['alert']} uses {name}, which is never exported"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_job_selector_matches_the_scrape_config(rule: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for job in re.findall(r'job="([^"]+)"', rule["expr"]):
        assert job in jobs
