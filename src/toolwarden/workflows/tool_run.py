"""`ToolRunWorkflow`: one supervised tool run, its retries and its approvals.

Deterministic and small: time is `workflow.now()`, waits are timers and conditions, all I/O
happens in the `run_tool` and `project_run` activities. The rules it follows (who may decide,
when an attempt ends the run, how a run closes) are plain functions in `rules.py`.

Every change is recorded as a `RunEvent`, in the order it happened, and the `project_run`
local activity hands the new events to the run sinks (mirror, metrics) as they come.

A long run continues as new between attempts, before its history nears Temporal's limits,
carrying its state over in a `CarriedRun` (`_hand_over`, `_take_over`).
"""

# No `from __future__ import annotations`: the sandbox re-imports this module for every run and
# the SDK reads each handler's type hints, which as strings would be evaluated every time.
import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from toolwarden.workflows import (
    APPROVAL_STATE,
    APPROVE_SIGNAL,
    APPROVER_NOT_ALLOWED,
    DECIDE_UPDATE,
    EVENTS_QUERY,
    PROJECT_RUN_ACTIVITY,
    REJECT_SIGNAL,
    REQUEST_APPROVAL_UPDATE,
    RUN_ENDED,
    RUN_STATE,
    RUN_TOOL_ACTIVITY,
    STATUS_QUERY,
    UNKNOWN_APPROVAL,
    WAIT_DECISION_UPDATE,
    WORKFLOW_NAME,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from toolwarden.models import (
        GATE_KEY,
        ApprovalAsk,
        ApprovalRecord,
        ApprovalRef,
        ApprovalSource,
        ApprovalState,
        AttemptOutcome,
        AttemptResult,
        AttemptSpec,
        AuditEntry,
        CarriedRun,
        DecideRequest,
        DecideResult,
        Decision,
        DecisionSignal,
        RunEvent,
        RunResult,
        RunSpec,
        RunState,
        RunStatus,
        RunUpdate,
        approval_id,
    )
    from toolwarden.workflows.rules import (
        CARRIED_AUDIT,
        CARRIED_EVENTS,
        NewEvent,
        approver_refusal,
        attempt_ended,
        can_retry,
        carried_approvals,
        decided_text,
        ending_state,
        run_ended,
        should_hand_over,
    )


# A run with no timeout still needs a bound for its activity; a blocking approval may take days.
UNBOUNDED_ATTEMPT = timedelta(days=365)
ACTIVITY_SLACK = timedelta(minutes=1)
PROJECTION_TIMEOUT = timedelta(seconds=10)


@workflow.defn(name=WORKFLOW_NAME)
class ToolRunWorkflow:
    # `carried` has no default: the SDK reads the handlers' type hints only when a call passes
    # every parameter, so clients start a run with `args=[spec, None]`.
    @workflow.init
    def __init__(self, spec: RunSpec, carried: CarriedRun | None) -> None:
        self._spec = spec
        # Where the supervision loop is; what callers see is `_visible_state()`, which also
        # accounts for the end of the run and for a pending approval.
        self._loop_state = RunState.PENDING
        self._attempt = 0
        self._retry_count = 0
        self._last_attempt: AttemptResult | None = None
        self._final: RunResult | None = None
        self._approvals: dict[str, ApprovalRecord] = {}
        self._audit: list[AuditEntry] = []
        self._events: list[RunEvent] = []
        self._next_seq = 1
        self._projected = 0  # events in `_events` handed to the sinks so far
        self._projecting = False  # a `project_run` batch is in flight
        # The search attributes the run already carries (set at start, or by the execution
        # that handed over), so an unchanged state costs no upsert.
        attributes = workflow.info().typed_search_attributes
        published_state = attributes.get(RUN_STATE)
        self._published: tuple[str, str | None] | None = (
            (published_state, attributes.get(APPROVAL_STATE)) if published_state else None
        )
        self._started_at = workflow.now()
        self._updated_at = self._started_at
        self._agent_session: str | None = None  # the agent session an awaited attempt left
        self._executions = 1
        self._resume: dict[str, Decision] = {}  # decisions the next launch passes to the tool
        if carried is not None:
            self._take_over(carried)

    def _take_over(self, carried: CarriedRun) -> None:
        """Continue where the previous execution of this run handed over."""
        self._attempt = carried.attempt
        self._retry_count = carried.retry_count
        self._started_at = carried.started_at
        self._next_seq = carried.next_seq
        self._executions = carried.executions + 1
        self._last_attempt = carried.last_attempt
        self._approvals = {a.key: a for a in carried.approvals}
        self._audit = list(carried.audit)
        self._events = list(carried.events)
        self._projected = len(self._events)  # the previous execution projected them
        self._resume = dict(carried.resume)
        self._agent_session = carried.agent_session
        self._loop_state = RunState.RETRYING if self._retry_count else RunState.RUNNING

    # -- the run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, spec: RunSpec, carried: CarriedRun | None) -> RunResult:
        if carried is None:
            self._emit("run_started", tool=spec.tool_name, argv=list(spec.argv))
        projector = asyncio.create_task(self._project_as_recorded())
        try:
            result = await self._supervise(spec)
        except asyncio.CancelledError:
            self._finish(RunState.CANCELLED, error="cancelled")
            await self._flush(projector)
            raise
        await self._flush(projector)
        return result

    async def _supervise(self, spec: RunSpec) -> RunResult:
        if spec.approve_before and self._executions == 1:
            gate = await self._gate(spec)
            if gate is not None:
                return gate
        while True:
            info = workflow.info()
            if should_hand_over(info.get_current_history_length(), info.is_continue_as_new_suggested()):
                await self._hand_over(spec)
            self._attempt += 1
            self._set_loop_state(RunState.RUNNING)
            self._emit("attempt_started", attempt=self._attempt)
            result = await self._run_attempt(spec, self._resume)
            self._last_attempt = result
            self._audit_agent_calls(result)
            self._record(attempt_ended(result))
            if result.outcome is AttemptOutcome.AWAITING_DECISION:
                # Exit and relaunch: no process and no worker slot while a person decides.
                self._set_loop_state(RunState.WAITING_APPROVAL)
                for key in result.pending_keys:
                    await self._await_decision(key)
                self._agent_session = result.agent_session  # an agent relaunches resumed
                self._resume = {
                    k: a.decision()
                    for k, a in self._approvals.items()
                    if a.state is not ApprovalState.PENDING
                }
                continue
            if can_retry(spec, self._retry_count, result):
                self._retry_count += 1
                delay = spec.backoff.delay(self._retry_count)
                self._set_loop_state(RunState.RETRYING)
                self._emit(
                    "retry_scheduled",
                    retry_count=self._retry_count,
                    delay_s=delay.total_seconds(),
                )
                await workflow.sleep(delay)
                continue
            state = ending_state(spec, self._retry_count, result)
            assert state is not None  # a decision or a retry was handled above
            return self._finish(
                state, exit_code=result.exit_code, signal=result.signal, error=result.error
            )

    async def _hand_over(self, spec: RunSpec) -> None:
        """Continue as new: a fresh history, carrying the run's state over (`CarriedRun`).

        Only between attempts, when no activity runs, and once the sinks have every event. A
        `wait_decision` left by a tool that has exited is abandoned: nobody awaits its answer.
        """
        self._emit("run_continued", execution=self._executions + 1)
        await workflow.wait_condition(lambda: self._projected >= len(self._events))
        approvals = carried_approvals(list(self._approvals.values()))
        carried = CarriedRun(
            attempt=self._attempt,
            retry_count=self._retry_count,
            started_at=self._started_at,
            next_seq=self._next_seq,
            executions=self._executions,
            last_attempt=self._last_attempt,
            approvals=approvals,
            audit=self._audit[-CARRIED_AUDIT:],
            events=self._events[-CARRIED_EVENTS:],
            resume={a.key: self._resume[a.key] for a in approvals if a.key in self._resume},
            agent_session=self._agent_session,
        )
        workflow.continue_as_new(args=[spec, carried])

    def _audit_agent_calls(self, result: AttemptResult) -> None:
        """Each call an agent's policy decided without a person, audited as decided by its rule."""
        for call in result.agent_calls:
            if call.verdict != "ask":
                self._audit.append(
                    AuditEntry(
                        at=call.at,
                        kind=f"policy_{call.verdict}",
                        key=call.tool_use_id,
                        by=f"policy: {call.rule}",
                        detail=call.summary,
                    )
                )

    async def _gate(self, spec: RunSpec) -> RunResult | None:
        """The approval asked before the first launch; a result if it ends the run."""
        assert spec.approve_before is not None
        self._open(ApprovalAsk(key=GATE_KEY, summary=spec.approve_before), ApprovalSource.GATE)
        decision = await self._await_decision(GATE_KEY)
        if decision.approved:
            return None
        state = {
            ApprovalState.EXPIRED: RunState.EXPIRED,
            ApprovalState.CANCELLED: RunState.CANCELLED,
        }.get(decision.outcome, RunState.REJECTED)
        return self._finish(state, error=f"gate {decision.outcome.value}: {decision.reason or ''}")

    def _attempt_spec(self, spec: RunSpec, resume: dict[str, Decision]) -> AttemptSpec:
        """The launch's input, carrying the events recorded since the last projection.

        The activity hands them to the sinks, so a tool that starts at once costs no
        `project_run` before it: one local activity per run fewer (docs/benchmarks.md, issue
        12). Not while a batch is in flight, so the sinks still see events in order.
        """
        recorded = None
        if not self._projecting and self._projected < len(self._events):
            recorded = RunUpdate(status=self.status(), events=self._events[self._projected :])
            self._projected = len(self._events)
        return AttemptSpec(
            spec=spec,
            attempt=self._attempt,
            resume=resume,
            recorded=recorded,
            agent_session=self._agent_session,
        )

    async def _run_attempt(self, spec: RunSpec, resume: dict[str, Decision]) -> AttemptResult:
        close_timeout = (
            spec.timeout + spec.kill_grace + ACTIVITY_SLACK if spec.timeout else UNBOUNDED_ATTEMPT
        )
        try:
            result: AttemptResult = await workflow.execute_activity(
                RUN_TOOL_ACTIVITY,
                self._attempt_spec(spec, resume),
                result_type=AttemptResult,
                start_to_close_timeout=close_timeout,
                heartbeat_timeout=spec.heartbeat_timeout,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_attempts=spec.worker_loss_retries + 1,
                    non_retryable_error_types=["ValidationError", "LaunchError"],
                ),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            return result
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, CancelledError):
                raise asyncio.CancelledError() from exc
            return AttemptResult(
                attempt=self._attempt,
                outcome=AttemptOutcome.FAILED,
                error=f"supervision lost: {cause or exc}",
            )

    def _finish(
        self,
        state: RunState,
        *,
        exit_code: int | None = None,
        signal: str | None = None,
        error: str | None = None,
    ) -> RunResult:
        """Close the run, however it ended: pending approvals are cancelled, then `run_ended`."""
        for key, record in self._approvals.items():
            if record.state is ApprovalState.PENDING:
                self._close(key, ApprovalState.CANCELLED, by=None, reason="run ended")
        self._final = RunResult(
            run_id=self._spec.run_id,
            state=state,
            exit_code=exit_code,
            signal=signal,
            error=error,
            attempt=self._attempt,
            retry_count=self._retry_count,
        )
        self._record(run_ended(state, exit_code))
        self._publish()
        return self._final

    # -- approvals ---------------------------------------------------------------------------

    def _open(self, ask: ApprovalAsk, source: ApprovalSource) -> ApprovalRecord:
        """Record a request once per key; asking again returns the same record."""
        existing = self._approvals.get(ask.key)
        if existing is not None:
            return existing
        spec = self._spec
        now = workflow.now()
        record = ApprovalRecord(
            approval_id=approval_id(spec.run_id, ask.key),
            run_id=spec.run_id,
            key=ask.key,
            summary=ask.summary,
            details=ask.details,
            source=source,
            on_expiry=ask.on_expiry or spec.approval_on_expiry,
            requested_at=now,
            expires_at=now + (ask.timeout or spec.approval_timeout),
        )
        self._approvals[ask.key] = record
        self._emit("approval_requested", key=ask.key, summary=ask.summary)
        self._publish()
        return record

    async def _await_decision(self, key: str) -> Decision:
        record = self._approvals[key]
        remaining = record.expires_at - workflow.now()
        if record.state is ApprovalState.PENDING and remaining > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: record.state is not ApprovalState.PENDING, timeout=remaining
                )
        if record.state is ApprovalState.PENDING:
            # Its timer ran out, perhaps while no execution waited on it (a hand-over).
            self._close(key, ApprovalState.EXPIRED, by=None, reason="expired")
        return record.decision()

    def _close(
        self,
        key: str,
        state: ApprovalState,
        *,
        by: str | None,
        reason: str | None,
        response: JsonValue = None,
    ) -> ApprovalRecord:
        record = self._approvals[key]
        record.state = state
        record.decided_at = workflow.now()
        record.decided_by = by
        record.reason = reason
        record.response = response
        self._emit("approval_decided", key=key, state=state.value, by=by)
        self._publish()
        return record

    def _why_refused(self, key: str, by: str | None) -> str | None:
        """Why a decision by `by` on `key` cannot take effect, or None if it can."""
        record = self._approvals.get(key)
        if record is None:
            return f"unknown approval {approval_id(self._spec.run_id, key)}"
        not_allowed = approver_refusal(self._spec.approvers, by)
        if not_allowed is not None:
            return not_allowed
        if record.state is not ApprovalState.PENDING:
            return f"already {decided_text(record)}"
        return None

    def _decide(
        self, key: str, approve: bool, by: str | None, reason: str | None, response: JsonValue
    ) -> DecideResult | None:
        """Apply a decision, or record why it was refused; None for an unknown key."""
        refusal = self._why_refused(key, by)
        if refusal is not None:
            self._record_refusal(key, by, refusal)
            record = self._approvals.get(key)
            if record is None:
                return None
            return DecideResult(took_effect=False, approval=record, message=refusal)
        state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
        record = self._close(key, state, by=by, reason=reason, response=response)
        self._audit.append(
            AuditEntry(at=workflow.now(), kind=f"decision_{state.value}", key=key, by=by)
        )
        return DecideResult(took_effect=True, approval=record, message=f"{state.value}")

    def _record_refusal(self, key: str, by: str | None, refusal: str) -> None:
        self._audit.append(
            AuditEntry(at=workflow.now(), kind="decision_refused", key=key, by=by, detail=refusal)
        )
        self._emit("approval_refused", key=key, by=by, reason=refusal)

    @workflow.update(
        name=REQUEST_APPROVAL_UPDATE, unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON
    )
    async def request_approval(self, ask: ApprovalAsk) -> ApprovalRecord:
        return self._open(ask, ApprovalSource.TOOL)

    @request_approval.validator
    def _validate_request(self, ask: ApprovalAsk) -> None:
        if self._final is not None:
            raise ApplicationError("the run has ended", type=RUN_ENDED)

    @workflow.update(
        name=WAIT_DECISION_UPDATE, unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON
    )
    async def wait_decision(self, ref: ApprovalRef) -> Decision:
        return await self._await_decision(ref.key)

    @wait_decision.validator
    def _validate_wait(self, ref: ApprovalRef) -> None:
        if ref.key not in self._approvals:
            raise ApplicationError(f"unknown approval key {ref.key}", type=UNKNOWN_APPROVAL)

    @workflow.update(name=DECIDE_UPDATE)
    async def decide(self, request: DecideRequest) -> DecideResult:
        result = self._decide(
            request.key, request.approve, request.by, request.reason, request.response
        )
        assert result is not None  # the validator rejected unknown keys
        return result

    @decide.validator
    def _validate_decide(self, request: DecideRequest) -> None:
        # A rejected update leaves no trace in the history, so these two refusals cost nothing;
        # a decision on an approval already decided is accepted and answered with the refusal.
        if request.key not in self._approvals:
            raise ApplicationError(
                f"unknown approval {approval_id(self._spec.run_id, request.key)}",
                type=UNKNOWN_APPROVAL,
            )
        not_allowed = approver_refusal(self._spec.approvers, request.by)
        if not_allowed is not None:
            raise ApplicationError(not_allowed, type=APPROVER_NOT_ALLOWED)

    @workflow.signal(name=APPROVE_SIGNAL)
    def approve(self, signal: DecisionSignal) -> None:
        self._decide(signal.key, True, signal.by, signal.reason, signal.response)

    @workflow.signal(name=REJECT_SIGNAL)
    def reject(self, signal: DecisionSignal) -> None:
        self._decide(signal.key, False, signal.by, signal.reason, signal.response)

    # -- queries and projection ---------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> RunStatus:
        spec = self._spec
        final = self._final
        return RunStatus(
            run_id=spec.run_id,
            tool_name=spec.tool_name,
            argv=spec.argv,
            state=self._visible_state(),
            attempt=self._attempt,
            retry_count=self._retry_count,
            started_at=self._started_at,
            updated_at=self._updated_at,
            ended_at=self._updated_at if final else None,
            exit_code=final.exit_code if final else None,
            signal=final.signal if final else None,
            error=final.error if final else None,
            last_attempt=self._last_attempt,
            approvals=list(self._approvals.values()),
            audit=list(self._audit),
            spec=spec,
        )

    @workflow.query(name=EVENTS_QUERY)
    def events(self) -> list[RunEvent]:
        return list(self._events)

    def _visible_state(self) -> RunState:
        if self._final is not None:
            return self._final.state
        if any(a.state is ApprovalState.PENDING for a in self._approvals.values()):
            return RunState.WAITING_APPROVAL
        return self._loop_state

    def _approval_state(self) -> str | None:
        if not self._approvals:
            return None
        if any(a.state is ApprovalState.PENDING for a in self._approvals.values()):
            return ApprovalState.PENDING.value
        latest = max(self._approvals.values(), key=lambda a: a.decided_at or a.requested_at)
        return latest.state.value

    def _set_loop_state(self, state: RunState) -> None:
        self._loop_state = state
        self._emit("state_changed", state=self._visible_state().value)
        self._publish()

    def _publish(self) -> None:
        """Keep `RunState` and `ApprovalState` current for visibility queries and the Web UI."""
        current = (self._visible_state().value, self._approval_state())
        if current == self._published:
            return  # an upsert is a command in the history: only on a change
        self._published = current
        updates: list[SearchAttributeUpdate[Any]] = [RUN_STATE.value_set(current[0])]
        if current[1] is not None:
            updates.append(APPROVAL_STATE.value_set(current[1]))
        workflow.upsert_search_attributes(updates)

    def _emit(self, kind: str, **data: JsonValue) -> None:
        self._record(NewEvent(kind, data))

    def _record(self, event: NewEvent) -> None:
        self._updated_at = workflow.now()
        self._events.append(
            RunEvent(seq=self._next_seq, at=self._updated_at, kind=event.kind, data=event.data)
        )
        self._next_seq += 1

    async def _project_as_recorded(self) -> None:
        """Hand each batch of new events to the run sinks, for as long as the run lives."""
        while True:
            await workflow.wait_condition(lambda: self._projected < len(self._events))
            upto = len(self._events)
            update = RunUpdate(status=self.status(), events=self._events[self._projected : upto])
            self._projecting = True
            try:
                await workflow.execute_local_activity(
                    PROJECT_RUN_ACTIVITY,
                    update,
                    start_to_close_timeout=PROJECTION_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=3),
                )
            finally:
                self._projecting = False
            self._projected = upto

    async def _flush(self, projector: asyncio.Task[None]) -> None:
        """Let the projector hand over the run's last events before the workflow completes."""
        await workflow.wait_condition(lambda: self._projected >= len(self._events))
        projector.cancel()
