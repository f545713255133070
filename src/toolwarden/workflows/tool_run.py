"""`ToolRunWorkflow`: one supervised tool run, its retries and its approvals.

Deterministic and small: time is `workflow.now()`, waits are timers and conditions, all I/O
happens in the `run_tool` and `project_run` activities.
"""

# No `from __future__ import annotations`: the sandbox re-imports this module for every run and
# the SDK reads each handler's type hints, which as strings would be evaluated every time.
import asyncio
from datetime import datetime, timedelta
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
    REJECT_SIGNAL,
    REQUEST_APPROVAL_UPDATE,
    RUN_ENDED,
    RUN_STATE,
    STATUS_QUERY,
    UNKNOWN_APPROVAL,
    WAIT_DECISION_UPDATE,
    WORKFLOW_NAME,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from toolwarden.activities.tool_run import PROJECT_RUN, RUN_TOOL, closing_events
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
        NewEvent,
        approver_refusal,
        attempt_ended,
        can_retry,
        ending_state,
        run_ended,
    )


# A run with no timeout still needs a bound for its activity; a blocking approval may take days.
UNBOUNDED_ATTEMPT = timedelta(days=365)
ACTIVITY_SLACK = timedelta(minutes=1)
PROJECTION_TIMEOUT = timedelta(seconds=10)
PROJECT_WITH_ATTEMPT = "project-with-attempt"  # workflow.patched id
HOLD_REFUSALS = "hold-refusals-during-attempt"  # workflow.patched id, asked only when it applies


@workflow.defn(name=WORKFLOW_NAME)
class ToolRunWorkflow:
    @workflow.init
    def __init__(self, spec: RunSpec) -> None:
        self._spec: RunSpec | None = spec
        self._phase = RunState.PENDING
        self._attempt = 0
        self._retry_count = 0
        self._last: AttemptResult | None = None
        self._final: RunResult | None = None
        self._approvals: dict[str, ApprovalRecord] = {}
        self._audit: list[AuditEntry] = []
        self._events: list[RunEvent] = []
        self._projected = 0
        self._launch_events = 0  # events recorded when the current attempt was launched
        self._attempt_running = False
        self._held: list[RunEvent] = []  # refusals recorded once the attempt ends (_refused)
        self._published: tuple[str, str | None] | None = None
        self._started_at = workflow.now()
        self._updated_at = self._started_at
        self._agent_session: str | None = None  # the agent session an awaited attempt left

    # -- the run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, spec: RunSpec) -> RunResult:
        self._emit("run_started", tool=spec.tool_name, argv=list(spec.argv))
        projector = asyncio.create_task(self._project_forever())
        try:
            result = await self._supervise(spec)
        except asyncio.CancelledError:
            self._finish(RunState.CANCELLED, error="cancelled")
            await self._flush(projector)
            raise
        await self._flush(projector)
        return result

    async def _supervise(self, spec: RunSpec) -> RunResult:
        if spec.approve_before:
            gate = await self._gate(spec)
            if gate is not None:
                return gate
        resume: dict[str, Decision] = {}
        while True:
            self._attempt += 1
            self._set_phase(RunState.RUNNING)
            self._emit("attempt_started", attempt=self._attempt)
            result = await self._run_attempt(spec, resume)
            self._last = result
            self._audit_agent_calls(result)
            closed = self._close_as_projected(spec, result)
            self._release_held()
            if closed is not None:
                return closed
            self._record(attempt_ended(result))
            if result.outcome is AttemptOutcome.AWAITING_DECISION:
                # Exit and relaunch: no process and no worker slot while a person decides.
                self._set_phase(RunState.WAITING_APPROVAL)
                for key in result.pending_keys:
                    await self._await_decision(key)
                self._agent_session = result.agent_session  # an agent relaunches resumed
                resume = {
                    k: a.decision()
                    for k, a in self._approvals.items()
                    if a.state is not ApprovalState.PENDING
                }
                continue
            if can_retry(spec, self._retry_count, result):
                self._retry_count += 1
                delay = spec.backoff.delay(self._retry_count)
                self._set_phase(RunState.RETRYING)
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

    def _projection_for_attempt(self) -> RunUpdate | None:
        """Pending events ride along with the attempt (replaces a `project_run` call)."""
        if not workflow.patched(PROJECT_WITH_ATTEMPT):
            return None
        update = RunUpdate(status=self.status(), events=self._events[self._projected :])
        self._projected = len(self._events)
        return update

    async def _run_attempt(self, spec: RunSpec, resume: dict[str, Decision]) -> AttemptResult:
        close_timeout = (
            spec.timeout + spec.kill_grace + ACTIVITY_SLACK if spec.timeout else UNBOUNDED_ATTEMPT
        )
        attempt = AttemptSpec(
            spec=spec,
            attempt=self._attempt,
            resume=resume,
            projection=self._projection_for_attempt(),
            agent_session=self._agent_session,
        )
        self._launch_events = len(self._events)
        self._attempt_running = True
        try:
            result: AttemptResult = await workflow.execute_activity(
                RUN_TOOL,
                attempt,
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
        finally:
            self._attempt_running = False

    def _close_as_projected(self, spec: RunSpec, result: AttemptResult) -> RunResult | None:
        """End the run exactly as the activity already projected it (`closing_projection`).

        Only if nothing was recorded since the launch: then the end computed where the tool ran
        is the workflow's own, and it needs no `project_run` local activity. The branch reads
        the recorded activity result, whose `final_projected` older activities never set, so
        every existing history replays unchanged without a patch.
        """
        if not result.final_projected or len(self._events) != self._launch_events:
            return None
        state = ending_state(spec, self._retry_count, result)
        pending = any(a.state is ApprovalState.PENDING for a in self._approvals.values())
        if state is None or pending or result.ended_at is None:
            return None
        self._events.extend(closing_events(len(self._events) + 1, result.ended_at, result, state))
        self._projected = len(self._events)
        self._updated_at = result.ended_at
        self._phase = state
        self._final = RunResult(
            run_id=self._run_id,
            state=state,
            exit_code=result.exit_code,
            signal=result.signal,
            error=result.error,
            attempt=self._attempt,
            retry_count=self._retry_count,
        )
        self._publish()
        return self._final

    def _finish(
        self,
        state: RunState,
        *,
        exit_code: int | None = None,
        signal: str | None = None,
        error: str | None = None,
    ) -> RunResult:
        self._release_held()
        for key, record in self._approvals.items():
            if record.state is ApprovalState.PENDING:
                self._close(key, ApprovalState.CANCELLED, by=None, reason="run ended")
        self._phase = state
        self._final = RunResult(
            run_id=self._run_id,
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
        spec = self._require_spec()
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
        if record.state is ApprovalState.PENDING:
            try:
                await workflow.wait_condition(
                    lambda: record.state is not ApprovalState.PENDING,
                    timeout=max(remaining, timedelta(milliseconds=1)),
                )
            except TimeoutError:
                if record.state is ApprovalState.PENDING:
                    self._close(key, ApprovalState.EXPIRED, by=None, reason="expired")
        return record.decision()

    def _close(
        self,
        key: str,
        state: ApprovalState,
        *,
        by: str | None,
        reason: str | None,
        response: object = None,
    ) -> ApprovalRecord:
        record = self._approvals[key]
        record.state = state
        record.decided_at = workflow.now()
        record.decided_by = by
        record.reason = reason
        record.response = response  # type: ignore[assignment]
        self._emit("approval_decided", key=key, state=state.value, by=by)
        self._publish()
        return record

    def _refusal(self, key: str, by: str | None) -> str | None:
        """Why a decision by `by` on `key` cannot take effect, or None if it can."""
        spec = self._require_spec()
        record = self._approvals.get(key)
        if record is None:
            return f"unknown approval {approval_id(spec.run_id, key)}"
        not_allowed = approver_refusal(spec.approvers, by)
        if not_allowed is not None:
            return not_allowed
        if record.state is not ApprovalState.PENDING:
            who = f" by {record.decided_by}" if record.decided_by else ""
            return f"already {record.state.value}{who}"
        return None

    def _refused(self, key: str, by: str | None, refusal: str) -> None:
        # While an attempt runs with nothing else recorded, the activity may end the run on the
        # next two event numbers (closing_projection); a refusal would take one of them, so it
        # is recorded once the attempt has ended. Asked only here, so other runs pay no marker.
        if (
            self._attempt_running
            and len(self._events) == self._launch_events
            and workflow.patched(HOLD_REFUSALS)
        ):
            self._held.append(
                RunEvent(
                    seq=0,  # numbered when released
                    at=workflow.now(),
                    kind="approval_refused",
                    data={"key": key, "by": by, "reason": refusal},
                )
            )
            return
        self._emit("approval_refused", key=key, by=by, reason=refusal)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for event in held:
            self._emit(event.kind, at=event.at, **event.data)

    def _decide(
        self, key: str, approve: bool, by: str | None, reason: str | None, response: object
    ) -> DecideResult | None:
        refusal = self._refusal(key, by)
        if refusal is not None:
            self._audit.append(
                AuditEntry(at=workflow.now(), kind="decision_refused", key=key, by=by, detail=refusal)
            )
            self._refused(key, by, refusal)
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
        spec = self._require_spec()
        if request.key not in self._approvals:
            raise ApplicationError(
                f"unknown approval {approval_id(spec.run_id, request.key)}",
                type=UNKNOWN_APPROVAL,
            )
        not_allowed = approver_refusal(spec.approvers, request.by)
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
        spec = self._require_spec()
        final = self._final
        return RunStatus(
            run_id=spec.run_id,
            tool_name=spec.tool_name,
            argv=spec.argv,
            state=self._state(),
            attempt=self._attempt,
            retry_count=self._retry_count,
            started_at=self._started_at,
            updated_at=self._updated_at,
            ended_at=self._updated_at if final else None,
            exit_code=final.exit_code if final else None,
            signal=final.signal if final else None,
            error=final.error if final else None,
            last_attempt=self._last,
            approvals=list(self._approvals.values()),
            audit=list(self._audit),
            spec=spec,
        )

    @workflow.query(name=EVENTS_QUERY)
    def events(self) -> list[RunEvent]:
        return list(self._events)

    def _state(self) -> RunState:
        if self._final is not None:
            return self._final.state
        if any(a.state is ApprovalState.PENDING for a in self._approvals.values()):
            return RunState.WAITING_APPROVAL
        return self._phase

    def _approval_state(self) -> str | None:
        if not self._approvals:
            return None
        if any(a.state is ApprovalState.PENDING for a in self._approvals.values()):
            return ApprovalState.PENDING.value
        latest = max(self._approvals.values(), key=lambda a: a.decided_at or a.requested_at)
        return latest.state.value

    def _set_phase(self, phase: RunState) -> None:
        self._phase = phase
        self._emit("state_changed", state=self._state().value)
        self._publish()

    def _publish(self) -> None:
        """Keep `RunState` and `ApprovalState` current for visibility queries and the Web UI."""
        current = (self._state().value, self._approval_state())
        if current == self._published:
            return
        self._published = current
        updates: list[SearchAttributeUpdate[Any]] = [RUN_STATE.value_set(current[0])]
        if current[1] is not None:
            updates.append(APPROVAL_STATE.value_set(current[1]))
        workflow.upsert_search_attributes(updates)

    def _emit(self, kind: str, *, at: datetime | None = None, **data: JsonValue) -> None:
        self._updated_at = workflow.now()
        self._events.append(
            RunEvent(seq=len(self._events) + 1, at=at or self._updated_at, kind=kind, data=data)
        )

    def _record(self, event: NewEvent) -> None:
        self._updated_at = workflow.now()
        self._events.append(
            RunEvent(seq=len(self._events) + 1, at=self._updated_at, kind=event.kind, data=event.data)
        )

    async def _project_forever(self) -> None:
        while True:
            await workflow.wait_condition(lambda: self._projected < len(self._events))
            await self._project_once()

    async def _project_once(self) -> None:
        upto = len(self._events)
        update = RunUpdate(status=self.status(), events=self._events[self._projected : upto])
        await workflow.execute_local_activity(
            PROJECT_RUN,
            update,
            start_to_close_timeout=PROJECTION_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        self._projected = max(self._projected, upto)

    async def _flush(self, projector: asyncio.Task[None]) -> None:
        await workflow.wait_condition(lambda: self._projected >= len(self._events))
        projector.cancel()

    @property
    def _run_id(self) -> str:
        return self._require_spec().run_id

    def _require_spec(self) -> RunSpec:
        if self._spec is None:
            raise ApplicationError("the run has not started", type=RUN_ENDED)
        return self._spec
