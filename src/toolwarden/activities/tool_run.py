"""Activities: thin adapters from Temporal to process control, the tool channel and the mirror."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from toolwarden import metrics, protocol
from toolwarden.agents import adapter
from toolwarden.channel import ToolChannel
from toolwarden.config import Settings
from toolwarden.models import (
    AgentCallRecord,
    ApprovalAsk,
    ApprovalRecord,
    ApprovalRef,
    ApprovalState,
    AttemptOutcome,
    AttemptResult,
    AttemptSpec,
    Decision,
    LiveDetails,
    RunEvent,
    RunState,
    RunUpdate,
)
from toolwarden.process import (
    Launched,
    LaunchError,
    drain_output,
    install_cli_shim,
    kill_stale_group,
    launch,
    path_with_first,
    supervise,
)
from toolwarden.protocol import (
    ENV_ATTEMPT,
    ENV_RESUME,
    ENV_RUN_ID,
    ENV_SOCKET,
    EXIT_AWAIT_DECISION,
)
from toolwarden.workflows import REQUEST_APPROVAL_UPDATE, WAIT_DECISION_UPDATE
from toolwarden.workflows.rules import attempt_ended, ending_state, run_ended

RUN_TOOL = "run_tool"
PROJECT_RUN = "project_run"
MAX_TICK_SECONDS = 1.0

log = logging.getLogger(__name__)


class MirrorSink(Protocol):
    def submit(self, update: RunUpdate) -> None: ...

    def heartbeat(self, run_id: str, live: LiveDetails) -> None: ...


def closing_events(first_seq: int, at: datetime, result: AttemptResult, state: RunState) -> list[RunEvent]:
    """The events that end a run on `result`, numbered from `first_seq`."""
    return [
        RunEvent(seq=seq, at=at, kind=event.kind, data=event.data)
        for seq, event in enumerate(
            [attempt_ended(result), run_ended(state, result.exit_code)], start=first_seq
        )
    ]


def closing_projection(start: RunUpdate, result: AttemptResult) -> RunUpdate | None:
    """The run's end as the mirror should show it, if `result` ends the run.

    `start` is the projection the workflow sent with the attempt. The activity hands this to the
    mirror as the tool exits, and the workflow, seeing `final_projected` with nothing else
    recorded since the launch, ends the run on exactly these events and values; so the run's
    end costs no `project_run` local activity.
    """
    status, spec = start.status, start.status.spec
    if spec is None or not start.events or result.ended_at is None:
        return None
    state = ending_state(spec, status.retry_count, result)
    if state is None or status.pending_approvals:
        return None
    final = result.model_copy(update={"final_projected": True})
    at = result.ended_at
    return RunUpdate(
        status=status.model_copy(
            update={
                "state": state,
                "updated_at": at,
                "ended_at": at,
                "exit_code": result.exit_code,
                "signal": result.signal,
                "error": result.error,
                "last_attempt": final,
            }
        ),
        events=closing_events(start.events[-1].seq + 1, at, result, state),
    )


def log_paths(settings: Settings, run_id: str, name: str) -> tuple[Path, Path]:
    base = settings.logs_dir / run_id
    return base / f"{name}.stdout.log", base / f"{name}.stderr.log"


def socket_path(settings: Settings, run_id: str, name: str) -> Path:
    digest = hashlib.sha256(f"{run_id}\0{name}".encode()).hexdigest()[:20]
    return settings.socket_dir / f"{digest}.sock"


class _Attempt:
    """Live state of one launch, shared by the heartbeat loop and the tool channel."""

    def __init__(self, attempt: AttemptSpec, host: str) -> None:
        self.spec = attempt
        self.host = host
        self.launched: Launched | None = None
        self.last_beat = 0.0
        self.last_beat_at: datetime | None = None
        self.progress: float | None = None
        self.message: str | None = None
        self.asked: set[str] = set()
        self.decided: set[str] = set()
        self.waiting: set[str] = set()
        self.key = f"{attempt.spec.run_id}:{attempt.attempt}"
        # Agent runs: the session to resume, calls a hook deferred, what the policy decided.
        self.agent_session: str | None = attempt.agent_session
        self.deferred: set[str] = set()
        self.agent_calls: list[AgentCallRecord] = []

    def on_heartbeat(self, progress: float | None, message: str | None) -> None:
        self.last_beat = time.monotonic()
        self.last_beat_at = datetime.now(UTC)
        if progress is not None:
            self.progress = progress
        if message is not None:
            self.message = message

    def live(self) -> LiveDetails:
        launched = self.launched
        last_output_at = None
        if launched is not None and launched.last_output > 0:
            ago = time.monotonic() - launched.last_output
            last_output_at = datetime.fromtimestamp(time.time() - ago, UTC)
        return LiveDetails(
            attempt=self.spec.attempt,
            pid=launched.pid if launched else None,
            pgid=launched.pgid if launched else None,
            host=self.host,
            started_at=launched.started_at if launched else None,
            last_output_at=last_output_at if launched and launched.stdout.total_bytes
            + launched.stderr.total_bytes else None,
            last_heartbeat_at=self.last_beat_at,
            progress=self.progress,
            message=self.message,
            waiting_keys=sorted(self.waiting),
            stdout_path=str(launched.stdout.path) if launched else None,
            stderr_path=str(launched.stderr.path) if launched else None,
            tail=list(launched.tail) if launched else [],
        )


class ToolActivities:
    def __init__(self, settings: Settings, mirror: MirrorSink | None = None) -> None:
        self._settings = settings
        self._mirror = mirror
        self._host = socket.gethostname()
        self.running = 0
        self._cli_dir: Path | None = None
        try:
            self._cli_dir = install_cli_shim(settings.tool_bin_dir)
        except OSError as exc:  # tools still run; `toolwarden ask` then needs it on their PATH
            log.warning("cannot write the tools' toolwarden shim in %s: %s", settings.tool_bin_dir, exc)

    @activity.defn(name=RUN_TOOL)
    async def run_tool(self, attempt: AttemptSpec) -> AttemptResult:
        info = activity.info()
        spec = attempt.spec
        if attempt.projection is not None:
            self._project(attempt.projection)  # idempotent: a retried attempt projects again
        self._reap_previous_attempt(info.heartbeat_details)
        name = f"attempt-{attempt.attempt}"
        if info.attempt > 1:
            name += f".{info.attempt}"  # relaunched after its worker was lost
        stdout_path, stderr_path = log_paths(self._settings, spec.run_id, name)
        state = _Attempt(attempt, self._host)
        assert info.workflow_id is not None  # run_tool is only scheduled by ToolRunWorkflow
        workflow = activity.client().get_workflow_handle(info.workflow_id)
        channel = ToolChannel(
            socket_path(self._settings, spec.run_id, name),
            run_id=spec.run_id,
            attempt=attempt.attempt,
            heartbeat_interval=min(1.0, self._settings.worker.heartbeat_interval.total_seconds()),
            on_heartbeat=state.on_heartbeat,
            on_request=lambda ask, notify: self._ask_workflow(workflow, state, ask, notify),
            on_agent_call=(
                (lambda call, notify: self._agent_call(workflow, state, call, notify))
                if spec.agent is not None
                else None
            ),
        )
        await channel.start()
        try:
            result = await self._run(attempt, state, channel, stdout_path, stderr_path)
        finally:
            await channel.close()
        return self._close_run(attempt, state, result)

    def _close_run(self, attempt: AttemptSpec, state: _Attempt, result: AttemptResult) -> AttemptResult:
        """If this attempt ends the run, project the end now (see `closing_projection`).

        Not when the tool asked for approvals: the workflow recorded events meanwhile, so it
        projects the end itself.
        """
        if attempt.projection is None or state.asked:
            return result
        closing = closing_projection(attempt.projection, result)
        if closing is None or closing.status.last_attempt is None:
            return result
        self._project(closing)
        return closing.status.last_attempt

    async def _run(
        self,
        attempt: AttemptSpec,
        state: _Attempt,
        channel: ToolChannel,
        stdout_path: Path,
        stderr_path: Path,
    ) -> AttemptResult:
        spec = attempt.spec
        env = {k: v for k, v in os.environ.items() if k != ENV_RESUME}
        env.update(spec.env)
        if self._cli_dir is not None:
            env["PATH"] = path_with_first(self._cli_dir, env.get("PATH"))
        env[ENV_SOCKET] = str(channel.path)
        env[ENV_RUN_ID] = spec.run_id
        env[ENV_ATTEMPT] = str(attempt.attempt)
        if attempt.resume:
            env[ENV_RESUME] = json.dumps(
                {k: d.model_dump(mode="json") for k, d in attempt.resume.items()}
            )
        result = AttemptResult(attempt=attempt.attempt, outcome=AttemptOutcome.FAILED_TO_START)
        result.host = self._host
        result.stdout_path, result.stderr_path = str(stdout_path), str(stderr_path)
        try:
            launched = await launch(
                adapter.launch_argv(spec, attempt.agent_session),
                cwd=spec.cwd,
                env=env,
                stdout_path=stdout_path,
                stderr_path=stderr_path,
                log_cap_bytes=spec.log_cap_bytes,
                tail_lines=spec.tail_lines,
            )
        except LaunchError as exc:
            result.error, result.exit_code = str(exc), exc.exit_code
            result.started_at = result.ended_at = datetime.now(UTC)
            return result
        state.launched = launched
        self.running += 1
        decided = [d.decided_at for d in attempt.resume.values() if d.decided_at is not None]
        if decided:  # relaunched after exit-and-relaunch: decision to running again
            metrics.resume_latency(spec.tool_name, (launched.started_at - max(decided)).total_seconds())
        metrics.attempt_started(spec.tool_name)
        # No heartbeat at launch: the first tick sends one, and a tool that ends sooner costs
        # no heartbeat RPC at all.
        ending = None
        try:
            ending = await supervise(
                launched,
                timeout=spec.timeout.total_seconds() if spec.timeout else None,
                hang_timeout=spec.hang_timeout.total_seconds() if spec.hang_timeout else None,
                kill_grace=spec.kill_grace.total_seconds(),
                tick=min(MAX_TICK_SECONDS, self._settings.worker.heartbeat_interval.total_seconds()),
                last_tool_heartbeat=lambda: max(state.last_beat, channel.last_seen or 0.0),
                waiting_for_person=lambda: bool(state.waiting),
                on_tick=lambda: self._beat(state),
            )
        except asyncio.CancelledError:
            if activity.is_worker_shutdown():
                # Not a cancelled run: this worker is draining, so another one relaunches it.
                raise ApplicationError(
                    "worker shut down; the tool will be relaunched",
                    type="WorkerShutdown",
                    category=ApplicationErrorCategory.BENIGN,  # expected: no traceback in logs
                ) from None
            raise
        finally:
            self.running -= 1
            await drain_output(launched)
            outcome = ending.outcome if ending else AttemptOutcome.CANCELLED
            metrics.attempt_ended(spec.tool_name, outcome.value, attempt=state.key)
            if outcome is AttemptOutcome.HUNG:
                metrics.hung_kill(spec.tool_name)
        outcome = ending.outcome
        undecided = sorted(state.asked - state.decided)
        deferred = sorted(state.deferred - state.decided)  # an agent's hook deferred these calls
        if (ending.exit_code == EXIT_AWAIT_DECISION and undecided) or adapter.awaits_decision(
            spec, ending.exit_code, deferred
        ):
            outcome = AttemptOutcome.AWAITING_DECISION
        live = state.live()
        return result.model_copy(
            update={
                "outcome": outcome,
                "exit_code": ending.exit_code,
                "signal": ending.signal,
                "error": ending.error,
                "pid": launched.pid,
                "pgid": launched.pgid,
                "started_at": launched.started_at,
                "ended_at": datetime.now(UTC),
                "stdout_bytes": launched.stdout.total_bytes,
                "stderr_bytes": launched.stderr.total_bytes,
                "truncated": launched.stdout.truncated or launched.stderr.truncated,
                "tail": live.tail,
                "pending_keys": undecided,
                "progress": state.progress,
                "message": state.message,
                "agent_session": state.agent_session,
                "agent_calls": state.agent_calls,
            }
        )

    def _beat(self, state: _Attempt) -> None:
        live = state.live()
        if state.launched is not None:
            silent = time.monotonic() - max(state.launched.last_output, state.last_beat)
            metrics.tool_heartbeat_age(state.spec.spec.tool_name, silent, attempt=state.key)
        activity.heartbeat(live)
        if self._mirror is not None:
            self._mirror.heartbeat(state.spec.spec.run_id, live)

    def _reap_previous_attempt(self, details: object) -> None:
        """A relaunch after a lost worker: kill what that attempt left on this host."""
        if not details:
            return
        try:
            (previous,) = activity.payload_converter().from_payloads(
                list(details),  # type: ignore[call-overload]
                [LiveDetails],
            )
        except Exception:  # details from an older version: nothing to reap
            return
        if isinstance(previous, LiveDetails) and previous.host == self._host and previous.pgid:
            kill_stale_group(previous.pgid)

    async def _ask_workflow(
        self,
        workflow: WorkflowHandle[object, object],
        state: _Attempt,
        ask: ApprovalAsk,
        notify_pending: Callable[[str, datetime], None],
    ) -> Decision:
        state.asked.add(ask.key)
        state.waiting.add(ask.key)
        try:
            ask = ask.model_copy(update={"attempt": state.spec.attempt})
            record: ApprovalRecord = await workflow.execute_update(
                REQUEST_APPROVAL_UPDATE, ask, result_type=ApprovalRecord
            )
            if record.state is not ApprovalState.PENDING:
                state.decided.add(ask.key)
                answer: Decision = record.decision()
                return answer
            notify_pending(record.approval_id, record.expires_at)
            decision: Decision = await workflow.execute_update(
                WAIT_DECISION_UPDATE, ApprovalRef(key=ask.key), result_type=Decision
            )
            state.decided.add(ask.key)
            if decision.decided_at is not None:
                waited = (datetime.now(UTC) - decision.decided_at).total_seconds()
                metrics.resume_latency(state.spec.spec.tool_name, waited)
            return decision
        finally:
            state.waiting.discard(ask.key)

    async def _agent_call(
        self,
        workflow: WorkflowHandle[object, object],
        state: _Attempt,
        call: protocol.AgentCallMessage,
        notify_pending: Callable[[str, datetime], None],
    ) -> Decision:
        """An agent's tool call: the policy decides, or it becomes an approval."""
        spec = state.spec.spec
        if call.session_id:
            state.agent_session = call.session_id
        screened = adapter.screen(spec, call, spec.cwd or os.getcwd(), datetime.now(UTC))
        state.agent_calls.append(screened.record)
        ask = screened.ask
        if ask is None:
            assert screened.decision is not None
            return screened.decision

        # Claude keeps one deferred call per exit: a second call deferred in the same turn would
        # be dropped. So once a call is deferred, later ones block (the hook keeps waiting).
        defer = not call.wait and not (state.deferred - state.decided)

        def pending(approval_id: str, expires_at: datetime) -> None:
            if defer:  # the hook hangs up and the agent exits: relaunch on the decision
                state.deferred.add(ask.key)
                notify_pending(approval_id, expires_at)

        return await self._ask_workflow(workflow, state, ask, pending)

    @activity.defn(name=PROJECT_RUN)
    async def project_run(self, update: RunUpdate) -> None:
        """Hand a run's new state to the mirror and metrics; never fails, never blocks."""
        self._project(update)

    def _project(self, update: RunUpdate) -> None:
        metrics.observe_update(update)
        if self._mirror is not None:
            self._mirror.submit(update)
