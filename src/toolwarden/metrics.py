"""Prometheus metrics of one toolwarden worker.

Everything lives in the module-level `REGISTRY` (not prometheus-client's global one), which the
worker's health server renders at `/metrics` together with the Temporal SDK's own runtime
metrics. Names follow Prometheus conventions: a unit suffix where there is a unit, `_total` on
counters, and bounded label sets: the tool name and an outcome or state, never a run id.

Two kinds of callers feed it:

* the `project_run` local activity calls `observe_update` once per workflow projection; the
  run-level counters (runs started and ended, retries, approvals) are derived from its events;
* the `run_tool` activity calls `attempt_started`, `attempt_ended`, `hung_kill`,
  `tool_heartbeat_age` and `resume_latency` for the tools running on this worker;
* the health server sets the readiness and mirror gauges from each readiness report.

Pending approvals are tracked per run from the projections this worker handled: a run's
workflow tasks stick to one worker, and an entry is dropped when the run ends, when nothing
is pending any more, or once the request's `expires_at` has passed (which bounds how long an
entry can outlive a run whose workflow moved to another worker).

Counters are per worker process, as usual with Prometheus: sum them across instances
(`sum by (tool) (rate(toolwarden_runs_started_total[5m]))`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from toolwarden import __version__
from toolwarden.models import ApprovalState, AttemptOutcome, RunState, RunUpdate

# The `*_created` companion series double the series count for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry()

# Tool names come from configuration or from executable names, so they are bounded in practice;
# this cap keeps a misbehaving client (a fresh name per run) from exploding the series count.
MAX_TOOL_LABELS = 200
OTHER_TOOL = "other"
UNKNOWN = "unknown"
# How many runs `observe_update` remembers to drop events it has already counted (a retried
# local activity hands the same events over again).
_SEEN_RUNS_CAP = 10_000
# A heartbeat age nobody refreshed for this long belongs to an attempt that ended unreported.
_HEARTBEAT_STALE_S = 600.0

_APPROVAL_WAIT_BUCKETS = (
    10, 30, 60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600,
    24 * 3600, 48 * 3600, 7 * 24 * 3600,
)
_RESUME_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

_RUN_STATES = frozenset(s.value for s in RunState)
_ATTEMPT_OUTCOMES = frozenset(o.value for o in AttemptOutcome)
_APPROVAL_STATES = frozenset(s.value for s in ApprovalState)

BUILD_INFO = Gauge(
    "toolwarden_build_info", "Always 1; the version label names the toolwarden release.",
    ["version"], registry=REGISTRY,
)
BUILD_INFO.labels(__version__).set(1)

RUNS_STARTED = Counter(
    "toolwarden_runs_started", "Runs whose workflow started.", ["tool"], registry=REGISTRY
)
RUNS_ENDED = Counter(
    "toolwarden_runs_ended", "Runs that reached a terminal state, by that state.",
    ["tool", "state"], registry=REGISTRY,
)
RETRIES = Counter(
    "toolwarden_retries", "Retries scheduled after a failed, killed or hung attempt.",
    ["tool"], registry=REGISTRY,
)
APPROVALS_REQUESTED = Counter(
    "toolwarden_approvals_requested", "Approval requests opened (by a tool or a gate).",
    ["tool"], registry=REGISTRY,
)
APPROVALS_DECIDED = Counter(
    "toolwarden_approvals_decided",
    "Approval requests closed, by outcome (approved, rejected, expired, cancelled).",
    ["tool", "outcome"], registry=REGISTRY,
)
APPROVALS_REFUSED = Counter(
    "toolwarden_approvals_refused",
    "Decisions the workflow refused (unknown key, already decided, approver not allowed).",
    ["tool"], registry=REGISTRY,
)
APPROVAL_WAIT = Histogram(
    "toolwarden_approval_wait_seconds", "Time from an approval request to its decision.",
    ["tool"], buckets=_APPROVAL_WAIT_BUCKETS, registry=REGISTRY,
)
ATTEMPTS = Counter(
    "toolwarden_attempts", "Tool launches on this worker that ended, by outcome.",
    ["tool", "outcome"], registry=REGISTRY,
)
TOOLS_RUNNING = Gauge(
    "toolwarden_tools_running", "Tool processes supervised by this worker right now.",
    ["tool"], registry=REGISTRY,
)
HUNG_KILLS = Counter(
    "toolwarden_hung_kills", "Tools killed because they showed no sign of life in time.",
    ["tool"], registry=REGISTRY,
)
DECISION_TO_RESUME = Histogram(
    "toolwarden_decision_to_resume_seconds",
    "Time from an approval decision to the tool running again with it.",
    ["tool"], buckets=_RESUME_BUCKETS, registry=REGISTRY,
)
MIRROR_BACKLOG = Gauge(
    "toolwarden_mirror_backlog_updates", "Run projections waiting to be written to the mirror.",
    registry=REGISTRY,
)
MIRROR_LAG = Gauge(
    "toolwarden_mirror_lag_seconds",
    "Age of the oldest projection not yet written to the mirror (0 when caught up).",
    registry=REGISTRY,
)
WORKER_READY = Gauge(
    "toolwarden_worker_ready",
    "1 when the worker is connected to Temporal and polling its task queue, else 0.",
    registry=REGISTRY,
)
SDK_METRICS_UP = Gauge(
    "toolwarden_sdk_metrics_up",
    "1 when the Temporal SDK's runtime metrics were fetched for this scrape, else 0.",
    registry=REGISTRY,
)

_lock = threading.Lock()
_tool_labels: set[str] = set()
_seen: OrderedDict[str, int] = OrderedDict()
_running: dict[str, int] = {}
# attempt key -> (tool, age reported, monotonic time of the report)
_heartbeats: dict[str, tuple[str, float, float]] = {}
# run id -> tool and its pending approvals (requested_at, expires_at)
_pending: dict[str, tuple[str, list[tuple[datetime, datetime]]]] = {}


def tool_label(tool: str | None) -> str:
    """The label value for a tool name; past `MAX_TOOL_LABELS` distinct names, `other`."""
    name = (tool or "").strip() or UNKNOWN
    with _lock:
        if name in _tool_labels:
            return name
        if len(_tool_labels) >= MAX_TOOL_LABELS:
            return OTHER_TOOL
        _tool_labels.add(name)
        return name


def _bounded(value: object, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else UNKNOWN


def _new_events(update: RunUpdate) -> list[int]:
    """Indexes of the events of `update` not counted yet (by their workflow-assigned seq)."""
    run_id = update.status.run_id
    with _lock:
        last = _seen.get(run_id, -1)
        fresh = [i for i, e in enumerate(update.events) if e.seq > last]
        if update.events:
            _seen[run_id] = max(last, *(e.seq for e in update.events))
            _seen.move_to_end(run_id)
            while len(_seen) > _SEEN_RUNS_CAP:
                _seen.popitem(last=False)
    return fresh


def observe_update(update: RunUpdate) -> None:
    """Count the events of one workflow projection (the run's tool labels every series).

    Events already counted for this run (same or lower `seq`) are ignored, so handing the same
    projection over twice (a retried local activity) does not count twice on this worker.
    """
    status = update.status
    tool = tool_label(status.tool_name)
    approvals = {a.key: a for a in status.approvals}
    for index in _new_events(update):
        event = update.events[index]
        data = event.data
        if event.kind == "run_started":
            RUNS_STARTED.labels(tool).inc()
        elif event.kind == "run_ended":
            RUNS_ENDED.labels(tool, _bounded(data.get("state"), _RUN_STATES)).inc()
        elif event.kind == "retry_scheduled":
            RETRIES.labels(tool).inc()
        elif event.kind == "approval_requested":
            APPROVALS_REQUESTED.labels(tool).inc()
        elif event.kind == "approval_decided":
            APPROVALS_DECIDED.labels(tool, _bounded(data.get("state"), _APPROVAL_STATES)).inc()
            record = approvals.get(str(data.get("key")))
            if record is not None and record.decided_at is not None:
                waited = (record.decided_at - record.requested_at).total_seconds()
                APPROVAL_WAIT.labels(tool).observe(max(waited, 0.0))
        elif event.kind == "approval_refused":
            APPROVALS_REFUSED.labels(tool).inc()
    _track_pending(update, tool)


def _track_pending(update: RunUpdate, tool: str) -> None:
    status = update.status
    pending = [
        (a.requested_at, a.expires_at)
        for a in status.approvals
        if a.state is ApprovalState.PENDING
    ]
    with _lock:
        if pending and not status.state.terminal:
            _pending[status.run_id] = (tool, pending)
        else:
            _pending.pop(status.run_id, None)


def attempt_started(tool: str) -> None:
    """A tool process was launched on this worker."""
    label = tool_label(tool)
    with _lock:
        _running[label] = _running.get(label, 0) + 1
        TOOLS_RUNNING.labels(label).set(_running[label])


def attempt_ended(tool: str, outcome: str, attempt: str | None = None) -> None:
    """A tool process launched with `attempt_started` is gone; `outcome` is an AttemptOutcome.

    `attempt` is the key given to `tool_heartbeat_age`, if any, so its age stops being reported.
    """
    label = tool_label(tool)
    ATTEMPTS.labels(label, _bounded(outcome, _ATTEMPT_OUTCOMES)).inc()
    with _lock:
        _running[label] = max(_running.get(label, 0) - 1, 0)
        TOOLS_RUNNING.labels(label).set(_running[label])
        if attempt is not None:
            _heartbeats.pop(attempt, None)
        if _running[label] == 0:
            for key in [k for k, v in _heartbeats.items() if v[0] == label]:
                del _heartbeats[key]


def hung_kill(tool: str) -> None:
    """The activity killed a tool that stopped showing signs of life."""
    HUNG_KILLS.labels(tool_label(tool)).inc()


def resume_latency(tool: str, seconds: float) -> None:
    """Time from an approval decision until the tool was running again with it."""
    DECISION_TO_RESUME.labels(tool_label(tool)).observe(max(seconds, 0.0))


def tool_heartbeat_age(tool: str, seconds: float, attempt: str | None = None) -> None:
    """Report how long ago a running tool last showed a sign of life (output or a beat).

    Call it on every heartbeat tick. `attempt` tells concurrent runs of one tool apart (any
    stable string, e.g. "RUN_ID:ATTEMPT"; it is never a label); without it the last report per
    tool wins. The exported gauge `toolwarden_tool_heartbeat_age_seconds{tool}` is the oldest
    age among this worker's running attempts of that tool.
    """
    label = tool_label(tool)
    with _lock:
        _heartbeats[attempt if attempt is not None else f"tool:{label}"] = (
            label, max(seconds, 0.0), time.monotonic(),
        )


def set_mirror(backlog: int, lag_seconds: float | None) -> None:
    """The mirror writer's backlog and the age of its oldest unwritten projection."""
    MIRROR_BACKLOG.set(max(backlog, 0))
    MIRROR_LAG.set(max(lag_seconds, 0.0) if lag_seconds is not None else 0.0)


def running_tools() -> int:
    """How many tool processes this worker supervises right now (for readiness reports)."""
    with _lock:
        return sum(_running.values())


def set_ready(ready: bool) -> None:
    WORKER_READY.set(1 if ready else 0)


def set_sdk_metrics_up(up: bool) -> None:
    SDK_METRICS_UP.set(1 if up else 0)


class _LiveCollector(Collector):
    """Gauges computed at scrape time from what the activities and projections reported."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now_mono = time.monotonic()
        now = datetime.now(UTC)
        ages: dict[str, float] = {}
        oldest: dict[str, float] = {}
        counts: dict[str, int] = {}
        with _lock:
            for key, (tool, age, at) in list(_heartbeats.items()):
                if now_mono - at > _HEARTBEAT_STALE_S:
                    del _heartbeats[key]
                    continue
                ages[tool] = max(ages.get(tool, 0.0), age)
            for tool, pending in _pending.values():
                for requested_at, expires_at in pending:
                    if expires_at <= now:
                        continue
                    waited = max((now - requested_at).total_seconds(), 0.0)
                    oldest[tool] = max(oldest.get(tool, 0.0), waited)
                    counts[tool] = counts.get(tool, 0) + 1
        heartbeat = GaugeMetricFamily(
            "toolwarden_tool_heartbeat_age_seconds",
            "Seconds since the quietest running attempt of this tool on this worker showed a "
            "sign of life.",
            labels=["tool"],
        )
        for tool, age in sorted(ages.items()):
            heartbeat.add_metric([tool], age)
        yield heartbeat
        waiting = GaugeMetricFamily(
            "toolwarden_approval_oldest_pending_age_seconds",
            "Age of the oldest pending approval request among the runs this worker projected.",
            labels=["tool"],
        )
        for tool, age in sorted(oldest.items()):
            waiting.add_metric([tool], age)
        yield waiting
        pending_family = GaugeMetricFamily(
            "toolwarden_approvals_pending",
            "Approval requests waiting for a decision, among the runs this worker projected.",
            labels=["tool"],
        )
        for tool, count in sorted(counts.items()):
            pending_family.add_metric([tool], count)
        yield pending_family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


REGISTRY.register(_LiveCollector())


def render() -> bytes:
    """The exposition text (format 0.0.4) of `REGISTRY`."""
    return generate_latest(REGISTRY)


def reset_for_tests() -> None:
    """Forget per-run bookkeeping (seen events, heartbeats, pending approvals).

    Counter values are kept: tests compare values before and after what they do.
    """
    with _lock:
        _seen.clear()
        _heartbeats.clear()
        _pending.clear()
