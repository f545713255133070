"""The one place that connects to Temporal, and the Python API orchestrators use.

    sup = await Supervisor.connect()
    handle = await sup.start_run(settings.run_spec(run_id=new_run_id("lint"), argv=["ruff", "."]))
    result = await handle.result()

The CLI, the TUI and the HTTP API are thin layers over this module. Deciding an approval goes
through `Supervisor.decide` only: it checks the allowlist, maps every refusal to one
`DecisionRefused` with a `RefusalReason`, and queues the decision when no worker answers.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn

from pydantic import JsonValue
from temporalio.client import (
    Client,
    TLSConfig,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode

from toolwarden.config import Settings, load_settings
from toolwarden.errors import one_line
from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    DecideRequest,
    DecideResult,
    DecisionSignal,
    LiveDetails,
    PendingApproval,
    PendingApprovals,
    RunEvent,
    RunResult,
    RunSpec,
    RunState,
    RunStatus,
    RunSummary,
    split_approval_id,
)
from toolwarden.workflows import (
    APPROVAL_STATE,
    APPROVE_SIGNAL,
    APPROVER_NOT_ALLOWED,
    DECIDE_UPDATE,
    EVENTS_QUERY,
    REJECT_SIGNAL,
    RUN_ENDED,
    RUN_STATE,
    STATUS_QUERY,
    TOOL_NAME,
    UNKNOWN_APPROVAL,
    WORKFLOW_NAME,
)
from toolwarden.workflows.rules import approver_refusal, decided_text, opening_state

log = logging.getLogger(__name__)

WORKFLOW_TYPE = WORKFLOW_NAME
# Every search attribute toolwarden keeps is a Keyword.
SEARCH_ATTRIBUTES = (TOOL_NAME.name, RUN_STATE.name, APPROVAL_STATE.name)
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SupervisorError(Exception):
    """A failure the CLI reports as one line (exit 1)."""


class Unavailable(SupervisorError):
    """Temporal does not answer at the configured address."""


class UnknownRun(SupervisorError):
    pass


class DuplicateRun(SupervisorError):
    pass


class RefusalReason(StrEnum):
    """Why a decision did not take effect; the HTTP API maps each to a status code."""

    UNKNOWN = "unknown"  # no such run or approval, or a malformed approval id
    NOT_ALLOWED = "not_allowed"  # the decider may not decide this approval
    ALREADY_DECIDED = "already_decided"  # someone (or the expiry timer) decided it first
    RUN_ENDED = "run_ended"  # the run is over; its approvals can no longer change


class DecisionRefused(SupervisorError):
    """A decision that did not take effect; `str()` is one line, e.g. "x/k is already approved
    by alice". `approval` is the approval as it stands, when the workflow said."""

    def __init__(
        self, reason: RefusalReason, message: str, approval: ApprovalRecord | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.approval = approval


class InvalidResponse(ValueError):
    """The response given with a decision is not JSON."""


def parse_response(text: str | None) -> JsonValue:
    """The response a decider hands the tool: empty means none; anything else must be JSON."""
    if text is None or not text.strip():
        return None
    try:
        value: JsonValue = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidResponse(f"not valid JSON: {exc.msg} (column {exc.colno})") from exc
    return value


def os_user() -> str:
    """Who is deciding from this terminal: the CLI and the TUI decide as the OS user."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def approvals_of(status: RunStatus, *, include_decided: bool = False) -> list[PendingApproval]:
    """One run's approvals as rows of the approvals list (pending ones only, by default)."""
    records = status.approvals if include_decided else status.pending_approvals
    return [
        PendingApproval(approval=a, tool_name=status.tool_name, run_state=status.state)
        for a in records
    ]


def oldest_first(rows: Iterable[PendingApproval]) -> list[PendingApproval]:
    return sorted(rows, key=lambda p: (p.approval.requested_at, p.approval.approval_id))


def assemble_approvals(
    run_ids: Iterable[str],
    statuses: Mapping[str, RunStatus],
    *,
    include_decided: bool = False,
    rows_of: Callable[[RunStatus], list[PendingApproval]] | None = None,
) -> list[PendingApproval]:
    """The approvals list, oldest first, from the runs that have approvals and whatever of their
    statuses is known. `rows_of` may stand in for `approvals_of` (the TUI caches its rows)."""
    if rows_of is None:
        rows_of = functools.partial(approvals_of, include_decided=include_decided)
    return oldest_first(
        row
        for run_id in run_ids
        if (status := statuses.get(run_id)) is not None
        for row in rows_of(status)
    )


def exit_process(code: int) -> NoReturn:
    """Leave a short-lived process that used the client, skipping interpreter finalization.

    The SDK's Rust threads can abort CPython's shutdown ("PyGILState_Release: thread state must
    be current", temporalio/sdk-python#300), turning a clean exit into SIGABRT.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def new_run_id(tool_name: str) -> str:
    """A readable, unique run id: `<tool>-<yymmdd>-<6 random chars>`."""
    stem = _ID_SAFE.sub("-", tool_name).strip("-.")[:40] or "run"
    return f"{stem}-{datetime.now(UTC):%y%m%d}-{secrets.token_hex(3)}"


_runtime: Runtime | None = None


def _metrics_runtime(address: str) -> Runtime | None:
    """The SDK's own Prometheus metrics; one runtime per process, so it is made once."""
    global _runtime
    if _runtime is None:
        try:
            _runtime = Runtime(
                telemetry=TelemetryConfig(
                    metrics=PrometheusConfig(
                        bind_address=address, counters_total_suffix=True, durations_as_seconds=True
                    )
                )
            )
        except ValueError as exc:  # port taken: run without SDK metrics rather than not at all
            log.warning("Temporal SDK metrics not served on %s: %s", address, exc)
            return None
    return _runtime


async def connect_client(settings: Settings, *, with_sdk_metrics: bool = False) -> Client:
    runtime = None
    if with_sdk_metrics and settings.worker.sdk_metrics_address:
        runtime = _metrics_runtime(settings.worker.sdk_metrics_address)
    tls: TLSConfig | bool = False
    if settings.temporal.tls.enabled:
        t = settings.temporal.tls
        tls = TLSConfig(
            server_root_ca_cert=t.server_root_ca_cert.read_bytes() if t.server_root_ca_cert else None,
            client_cert=t.client_cert.read_bytes() if t.client_cert else None,
            client_private_key=t.client_private_key.read_bytes() if t.client_private_key else None,
            domain=t.server_name,
        )
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal.address,
                namespace=settings.temporal.namespace,
                data_converter=pydantic_data_converter,
                tls=tls,
                api_key=settings.temporal.api_key,
                runtime=runtime,
            ),
            timeout=settings.temporal.connect_timeout.total_seconds(),
        )
    except (RuntimeError, OSError, TimeoutError) as exc:
        raise Unavailable(
            f"Temporal does not answer at {settings.temporal.address} "
            "(start one with `toolwarden up`, or set temporal.address)"
        ) from exc


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register ToolName, RunState and ApprovalState on a cluster that lacks them."""
    # Imported here: only workers register attributes, and these protos slow every CLI start.
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace, search_attributes=dict.fromkeys(SEARCH_ATTRIBUTES, keyword)
            )
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise


QUERY_TIMEOUT = timedelta(seconds=15)
# A listing asks every waiting run at once and is only as quick as the slowest answer. A run
# whose worker died recently (the server still counts it as polling) answers nothing until the
# timeout, so a listing waits less and shows such runs as unanswered instead.
LISTING_QUERY_TIMEOUT = timedelta(seconds=5)
# A worker answers a decision in milliseconds. Past this the run has no live worker: after a
# worker crash another one takes its runs once the sticky queue times out (10 s), so wait longer.
DECIDE_TIMEOUT = timedelta(seconds=15)
_NO_WORKER_STATUSES = frozenset(
    {RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.CANCELLED}
)


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


class RunHandle:
    def __init__(self, supervisor: Supervisor, run_id: str) -> None:
        self.supervisor = supervisor
        self.run_id = run_id
        self._handle: WorkflowHandle[Any, RunResult] = supervisor.client.get_workflow_handle(
            run_id, result_type=RunResult
        )

    async def status(self, timeout: timedelta = QUERY_TIMEOUT) -> RunStatus:
        """The workflow's own status, plus what the live tool last reported by heartbeat."""
        try:
            status, description = await asyncio.gather(
                self._handle.query(STATUS_QUERY, result_type=RunStatus, rpc_timeout=timeout),
                self._handle.describe(),
            )
        except RPCError as exc:
            raise self._query_error(exc) from exc
        for pending in description.raw_description.pending_activities:
            if pending.heartbeat_details.payloads:
                (live,) = await self.supervisor.client.data_converter.decode(
                    pending.heartbeat_details.payloads, [LiveDetails]
                )
                status.live = live
        result: RunStatus = status
        return result

    async def spec(self) -> RunSpec:
        """The run's spec as it was started, read from its history: no worker needed."""
        from temporalio.api.common.v1 import WorkflowExecution
        from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest

        client = self.supervisor.client
        request = GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=self.run_id),
            maximum_page_size=1,
        )
        try:
            response = await client.workflow_service.get_workflow_execution_history(
                request, timeout=QUERY_TIMEOUT
            )
        except RPCError as exc:
            if _not_found(exc):
                raise UnknownRun(f"unknown run {self.run_id}") from exc
            raise
        started = response.history.events[0].workflow_execution_started_event_attributes
        # The input is [spec, carried]; a run that continued as new keeps the same spec.
        (spec,) = await client.data_converter.decode(started.input.payloads[:1], [RunSpec])
        if not isinstance(spec, RunSpec):
            raise TypeError(f"run {self.run_id} was not started with a RunSpec")
        return spec

    async def events(self) -> list[RunEvent]:
        try:
            events: list[RunEvent] = await self._handle.query(
                EVENTS_QUERY, result_type=list[RunEvent], rpc_timeout=QUERY_TIMEOUT
            )
            return events
        except RPCError as exc:
            raise self._query_error(exc) from exc

    def _query_error(self, exc: RPCError) -> Exception:
        """Queries need a worker; say so in one line instead of a timeout traceback."""
        if _not_found(exc):
            return UnknownRun(f"unknown run {self.run_id}")
        if "poller" in exc.message or exc.status in _NO_WORKER_STATUSES:
            queue = self.supervisor.settings.temporal.task_queue
            return SupervisorError(
                f"no worker answers for run {self.run_id} (task queue '{queue}'): "
                "start one with `toolwarden worker` or `toolwarden up`"
            )
        return exc

    async def result(self) -> RunResult:
        """Wait for the run to end; a cancelled run reports `cancelled`, it does not raise."""
        try:
            return await self._handle.result()
        except WorkflowFailureError:
            status = await self.status()
            return RunResult(
                run_id=self.run_id,
                state=status.state if status.state.terminal else RunState.CANCELLED,
                exit_code=status.exit_code,
                signal=status.signal,
                error=status.error,
                attempt=status.attempt,
                retry_count=status.retry_count,
            )
        except RPCError as exc:
            if _not_found(exc):
                raise UnknownRun(f"unknown run {self.run_id}") from exc
            raise

    async def cancel(self, reason: str | None = None) -> None:
        """Request cancellation; the tool is stopped and the run ends `cancelled`."""
        try:
            description = await self._handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                raise SupervisorError(f"run {self.run_id} has already ended")
            await self._handle.cancel(reason=reason or "")
        except RPCError as exc:
            if _not_found(exc):
                raise UnknownRun(f"unknown run {self.run_id}") from exc
            raise

    async def decide(
        self,
        key: str,
        *,
        approve: bool,
        by: str,
        reason: str | None = None,
        response: JsonValue = None,
    ) -> DecideResult:
        """Decide, through `Supervisor.decide` (which checks the allowlist first)."""
        request = DecideRequest(key=key, approve=approve, by=by, reason=reason, response=response)
        try:
            decided: DecideResult = await self._handle.execute_update(
                DECIDE_UPDATE, request, result_type=DecideResult, rpc_timeout=DECIDE_TIMEOUT
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            if isinstance(exc.__cause__, asyncio.CancelledError):
                raise
            # An update needs a worker to land; a signal is durable without one.
            return await self._queue_decision(request)
        except WorkflowUpdateFailedError as exc:
            raise _update_refusal(exc) from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
                # The run holds as many updates as the server allows in flight (each tool's
                # blocking ask holds one): a signal still lands, and applies at once.
                return await self._queue_decision(request, busy=True)
            # A closed run rejects updates; say what became of the approval instead.
            raise await self._closed_approval(key) from exc
        if not decided.took_effect and decided.approval is not None:
            record = decided.approval
            raise DecisionRefused(
                RefusalReason.ALREADY_DECIDED,
                f"{record.approval_id} is already {decided_text(record)}",
                record,
            )
        return decided

    async def _queue_decision(self, request: DecideRequest, *, busy: bool = False) -> DecideResult:
        signal = DecisionSignal(
            key=request.key, by=request.by, reason=request.reason, response=request.response
        )
        try:
            await self._handle.signal(APPROVE_SIGNAL if request.approve else REJECT_SIGNAL, signal)
        except RPCError as exc:
            raise await self._closed_approval(request.key) from exc
        verb = "approval" if request.approve else "rejection"
        if busy:
            return DecideResult(
                took_effect=False,
                queued=True,
                message=(
                    f"queued: run {self.run_id} has as many requests in flight as the server "
                    f"allows; your {verb} of {self.run_id}/{request.key} is recorded in the "
                    "run's history and applies as the run reads it, unless it was decided or "
                    f"expired first (`toolwarden show {self.run_id}` tells)"
                ),
            )
        return DecideResult(
            took_effect=False,
            queued=True,
            message=(
                f"queued: no worker answers run {self.run_id} now; your {verb} of "
                f"{self.run_id}/{request.key} is recorded in the run's history and applies when "
                "a worker picks the run up, unless it was decided or expired first "
                f"(`toolwarden show {self.run_id}` tells)"
            ),
        )

    async def _closed_approval(self, key: str) -> DecisionRefused:
        try:
            status = await self.status()
        except UnknownRun:
            return DecisionRefused(RefusalReason.UNKNOWN, f"unknown run {self.run_id}")
        record = next((a for a in status.approvals if a.key == key), None)
        if record is None:
            return DecisionRefused(
                RefusalReason.UNKNOWN,
                f"unknown approval {self.run_id}/{key} (run {status.state.value})",
            )
        return DecisionRefused(
            RefusalReason.RUN_ENDED,
            f"{record.approval_id} is already {decided_text(record)}; "
            f"run {self.run_id} has ended ({status.state.value})",
            record,
        )


_REFUSAL_OF_ERROR_TYPE = {
    UNKNOWN_APPROVAL: RefusalReason.UNKNOWN,
    APPROVER_NOT_ALLOWED: RefusalReason.NOT_ALLOWED,
    RUN_ENDED: RefusalReason.RUN_ENDED,
}


def _update_refusal(exc: WorkflowUpdateFailedError) -> SupervisorError:
    """The workflow's validator refused the update: one line, and why, when it says."""
    cause = exc.cause
    if not isinstance(cause, ApplicationError):
        return SupervisorError(str(cause))
    reason = _REFUSAL_OF_ERROR_TYPE.get(cause.type or "")
    if reason is None:
        return SupervisorError(cause.message)
    return DecisionRefused(reason, cause.message)


class Supervisor:
    """Start, watch, list and decide supervised tool runs."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> Supervisor:
        settings = settings or load_settings()
        return cls(await connect_client(settings), settings)

    async def start_run(self, spec: RunSpec) -> RunHandle:
        try:
            await self.client.start_workflow(
                WORKFLOW_NAME,
                args=[spec, None],  # no state carried over: a new run
                result_type=RunResult,
                id=spec.run_id,
                task_queue=self.settings.temporal.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=_opening_attributes(spec),
                static_summary=f"{spec.tool_name}: {' '.join(spec.argv)}"[:200],
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.ALREADY_EXISTS:
                raise DuplicateRun(f"run id {spec.run_id} already exists") from exc
            raise
        except Exception as exc:
            if type(exc).__name__ == "WorkflowAlreadyStartedError":
                raise DuplicateRun(f"run id {spec.run_id} already exists") from exc
            raise
        return RunHandle(self, spec.run_id)

    def get_run(self, run_id: str) -> RunHandle:
        return RunHandle(self, run_id)

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        tool: str | None = None,
        approval_state: ApprovalState | None = None,
        running_only: bool = False,
        with_approvals: bool = False,
        limit: int | None = 100,
    ) -> list[RunSummary]:
        # A run that continued as new is listed once, by its current execution.
        clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'", "ExecutionStatus != 'ContinuedAsNew'"]
        if with_approvals:
            clauses.append(f"{APPROVAL_STATE.name} IS NOT NULL")
        if state is not None:
            clauses.append(f"{RUN_STATE.name} = '{state.value}'")
        if tool is not None:
            clauses.append(f"{TOOL_NAME.name} = '{_quote(tool)}'")
        if approval_state is not None:
            clauses.append(f"{APPROVAL_STATE.name} = '{approval_state.value}'")
        if running_only:
            clauses.append("ExecutionStatus = 'Running'")
        rows: list[RunSummary] = []
        async for execution in self.client.list_workflows(
            " AND ".join(clauses), limit=limit
        ):
            attrs = execution.typed_search_attributes
            raw_state = attrs.get(RUN_STATE)
            raw_approval = attrs.get(APPROVAL_STATE)
            rows.append(
                RunSummary(
                    run_id=execution.id,
                    tool_name=attrs.get(TOOL_NAME),
                    state=_status_state(execution.status, raw_state),
                    approval_state=ApprovalState(raw_approval) if raw_approval else None,
                    status=execution.status.name.lower() if execution.status else "unknown",
                    started_at=execution.start_time,
                    ended_at=execution.close_time,
                )
            )
        return rows

    async def pending_approvals(self, include_decided: bool = False) -> PendingApprovals:
        """Every pending approval of every running run, oldest first, and the runs that are
        waiting for a person but cannot say for what now (no worker answers their queries).

        With `include_decided`, every approval of the most recent runs that asked for one,
        open or ended, whatever became of it.
        """
        if include_decided:
            runs = await self.list_runs(with_approvals=True)
        else:
            runs = await self.list_runs(
                approval_state=ApprovalState.PENDING, running_only=True, limit=None
            )
        answers = await asyncio.gather(
            *(self.get_run(r.run_id).status(LISTING_QUERY_TIMEOUT) for r in runs),
            return_exceptions=True,
        )
        statuses: dict[str, RunStatus] = {}
        unanswered: list[str] = []
        for run, answer in zip(runs, answers, strict=True):
            if isinstance(answer, RunStatus):
                statuses[run.run_id] = answer
            elif not isinstance(answer, Exception):
                raise answer  # cancellation, not an answer
            elif not isinstance(answer, UnknownRun):  # a run deleted since the listing is gone
                unanswered.append(run.run_id)
        rows = assemble_approvals(
            (r.run_id for r in runs), statuses, include_decided=include_decided
        )
        return PendingApprovals(approvals=rows, unanswered_runs=unanswered)

    async def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str | None = None,
        response: JsonValue = None,
        acting_user: str | None = None,
    ) -> DecideResult:
        """Approve or reject `approval_id` (RUN/KEY) as `by`.

        Returns the applied decision, or a queued one when no worker answers (it applies when
        one picks the run up). Raises `DecisionRefused` when it cannot take effect.

        `acting_user` is the OS user of a local face (CLI, TUI), whose `by` is only a claim:
        while an allowlist applies to the run, such a decider may decide only as itself. The
        allowlist holds only as far as access to Temporal is restricted (docs/guide.md).
        """
        try:
            run_id, key = split_approval_id(approval_id)
        except ValueError as exc:
            raise DecisionRefused(RefusalReason.UNKNOWN, str(exc)) from exc
        # The workflow enforces the allowlist too; checking here gives the reason in one line,
        # also when no worker answers and the decision would go as a signal.
        refusal = approver_refusal(self.settings.approvals.approvers, by)
        if refusal is not None:
            raise DecisionRefused(RefusalReason.NOT_ALLOWED, refusal)
        run = self.get_run(run_id)
        if acting_user is not None and by != acting_user:
            await self._refuse_impersonation(run, by, acting_user)
        return await run.decide(key, approve=approve, by=by, reason=reason, response=response)

    async def _refuse_impersonation(self, run: RunHandle, by: str, acting_user: str) -> None:
        refused = DecisionRefused(
            RefusalReason.NOT_ALLOWED,
            f"{acting_user} may not decide as {by}: an approver allowlist applies, so a local "
            "decision is made as the OS user (drop --by)",
        )
        if self.settings.approvals.approvers:
            raise refused
        try:
            spec = await run.spec()
        except UnknownRun as exc:
            raise DecisionRefused(RefusalReason.UNKNOWN, str(exc)) from exc
        except (RPCError, ValueError, TypeError, IndexError) as exc:
            raise DecisionRefused(
                RefusalReason.NOT_ALLOWED,
                f"cannot tell whether an allowlist applies to run {run.run_id}, so {acting_user} "
                f"may not decide as {by} ({one_line(exc)})",
            ) from exc
        if spec.approvers:
            raise refused

    def web_ui_url(self, run_id: str) -> str:
        ns = self.settings.temporal.namespace
        return f"{self.settings.ui_url}/namespaces/{ns}/workflows/{run_id}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _opening_attributes(spec: RunSpec) -> TypedSearchAttributes:
    run_state, approval_state = opening_state(spec)
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(TOOL_NAME, spec.tool_name),
        SearchAttributePair(RUN_STATE, run_state.value),
    ]
    if approval_state is not None:
        pairs.append(SearchAttributePair(APPROVAL_STATE, approval_state.value))
    return TypedSearchAttributes(pairs)


def _status_state(status: WorkflowExecutionStatus | None, raw: Any) -> RunState | None:
    if status == WorkflowExecutionStatus.CANCELED:
        return RunState.CANCELLED
    if raw:
        return RunState(raw)
    if status in (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT):
        return RunState.FAILED
    return None

