"""Activities: thin adapters from Temporal to process control, the tool channel and the run sinks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError, RPCStatusCode

from toolwarden import metrics, protocol
from toolwarden.agents import adapter
from toolwarden.channel import NotifyPending, ToolChannel
from toolwarden.config import Settings
from toolwarden.files import private_dir
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
    RunUpdate,
)
from toolwarden.orphans import AttemptLedger, AttemptRecord, kill_recorded_group
from toolwarden.process import (
    Launched,
    LaunchError,
    drain_output,
    install_cli_shim,
    launch,
    path_with_first,
    supervise,
)
from toolwarden.prompts import AskPerson, PromptScreen, start_answering, stop_answering
from toolwarden.protocol import (
    ENV_ATTEMPT,
    ENV_RESUME,
    ENV_RUN_ID,
    ENV_SOCKET,
    EXIT_AWAIT_DECISION,
)
from toolwarden.secrets import SecretError, redact, resolve_secrets
from toolwarden.sinks import RunSink, RunSinks
from toolwarden.workflows import (
    PROJECT_RUN_ACTIVITY,
    REQUEST_APPROVAL_UPDATE,
    RUN_TOOL_ACTIVITY,
    WAIT_DECISION_UPDATE,
)

MAX_TICK_SECONDS = 1.0
# A tool waiting on a person outlives a Temporal server restart: these are retried, not fatal.
TRANSIENT_RPC = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.UNKNOWN,  # a connection cut mid-call ("transport error")
    }
)
UPDATE_RETRY_INITIAL = 0.2
UPDATE_RETRY_MAX = 5.0

log = logging.getLogger(__name__)


async def _update_through_outages(
    workflow: WorkflowHandle[object, object],
    name: str,
    arg: Any,
    result_type: type[Any],
    *,
    update_id: str | None = None,
) -> Any:
    """`execute_update`, retried while the server is unreachable (a restart, a network cut).

    Both updates it serves are idempotent (an approval is opened once per key; a wait returns
    the decision), so a retry after a lost answer is safe. Any other error is raised.
    """
    delay = UPDATE_RETRY_INITIAL
    failures = 0
    while True:
        try:
            result = await workflow.execute_update(
                name, arg, id=update_id, result_type=result_type
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            # The SDK turns our own cancellation (the tool hung up) into this error too.
            task = asyncio.current_task()
            if isinstance(exc.__cause__, asyncio.CancelledError) or (task and task.cancelling()):
                raise asyncio.CancelledError() from exc
            why = str(exc) or type(exc).__name__
        except RPCError as exc:
            if exc.status not in TRANSIENT_RPC:
                raise
            why = f"{exc.status.name}: {exc.message}"
        else:
            if failures:
                log.warning("%s on %s: answered after %d retries", name, workflow.id, failures)
            return result
        failures += 1
        if failures == 1:
            log.warning("%s on %s: the server did not answer (%s); retrying", name, workflow.id, why)
        await asyncio.sleep(delay)
        delay = min(delay * 2, UPDATE_RETRY_MAX)


def log_paths(settings: Settings, run_id: str, name: str) -> tuple[Path, Path]:
    base = settings.logs_dir / run_id
    return base / f"{name}.stdout.log", base / f"{name}.stderr.log"


def socket_path(settings: Settings, run_id: str, name: str) -> Path:
    digest = hashlib.sha256(f"{run_id}\0{name}".encode()).hexdigest()[:20]
    return settings.socket_dir / f"{digest}.sock"


class _Attempt:
    """Live state of one launch, shared by the heartbeat loop and the tool channel."""

    def __init__(self, attempt: AttemptSpec, host: str) -> None:
        self.attempt = attempt
        self.host = host
        self.launched: Launched | None = None
        self.last_beat = 0.0
        self.last_beat_at: datetime | None = None
        self.progress: float | None = None
        self.message: str | None = None
        self.asked: set[str] = set()
        self.told_pending: set[str] = set()  # keys whose `pending` line went to the tool's socket
        self.decided: set[str] = set()
        self.waiting: set[str] = set()
        self.key = f"{attempt.spec.run_id}:{attempt.attempt}"
        # Resolved values, scrubbed from what leaves the worker: output tail, tool message.
        self.secrets: dict[str, str] = {}
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
            attempt=self.attempt.attempt,
            pid=launched.pid if launched else None,
            pgid=launched.pgid if launched else None,
            host=self.host,
            started_at=launched.started_at if launched else None,
            last_output_at=last_output_at if launched and launched.stdout.total_bytes
            + launched.stderr.total_bytes else None,
            last_heartbeat_at=self.last_beat_at,
            progress=self.progress,
            message=self.scrubbed(self.message),
            waiting_keys=sorted(self.waiting),
            stdout_path=str(launched.stdout.path) if launched else None,
            stderr_path=str(launched.stderr.path) if launched else None,
            tail=[self.scrubbed(line) for line in launched.tail] if launched else [],
        )

    def scrubbed(self, text: str | None) -> str | None:
        if text is None or not self.secrets:
            return text
        return redact(text, self.secrets)


def _noting_pending(state: _Attempt, key: str, notify: NotifyPending) -> NotifyPending:
    """`notify` that also notes the tool was told `key` is pending (it may now exit 75)."""

    def tell(approval_id: str, expires_at: datetime) -> None:
        notify(approval_id, expires_at)
        state.told_pending.add(key)

    return tell


class ToolActivities:
    """The worker's activities; every change of a run goes to each of `sinks` (mirror, metrics)."""

    def __init__(self, settings: Settings, sinks: Sequence[RunSink] = ()) -> None:
        self._settings = settings
        self._sinks = RunSinks(sinks)
        self._host = socket.gethostname()
        self.running = 0
        self._cli_dir: Path | None = None
        self.ledger = AttemptLedger(settings.attempts_dir, self._host)
        for directory in (settings.home, settings.logs_dir, settings.attempts_dir):
            private_dir(directory)
        try:
            self._cli_dir = install_cli_shim(settings.tool_bin_dir)
        except OSError as exc:  # tools still run; `toolwarden ask` then needs it on their PATH
            log.warning("cannot write the tools' toolwarden shim in %s: %s", settings.tool_bin_dir, exc)

    @activity.defn(name=RUN_TOOL_ACTIVITY)
    async def run_tool(self, attempt: AttemptSpec) -> AttemptResult:
        info = activity.info()
        spec = attempt.spec
        if attempt.recorded is not None:
            self._sinks.run_changed(attempt.recorded)  # idempotent: a retry hands them again
        if info.attempt > 1:  # relaunched after its worker was lost
            await asyncio.to_thread(self._reap_previous_attempt, spec.run_id, info.heartbeat_details)
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
            on_request=lambda ask, notify: self._ask_workflow(
                workflow, state, ask, _noting_pending(state, ask.key, notify)
            ),
            on_agent_call=(
                (lambda call, notify: self._agent_call(workflow, state, call, notify))
                if spec.agent is not None
                else None
            ),
        )
        await channel.start()

        async def ask_person(ask: ApprovalAsk) -> Decision:  # a prompt seen on the terminal
            return await self._ask_workflow(workflow, state, ask, lambda _id, _expires: None)

        try:
            return await self._run(
                attempt, state, channel, stdout_path, stderr_path, ask_person
            )
        finally:
            await channel.close()

    async def _run(
        self,
        attempt: AttemptSpec,
        state: _Attempt,
        channel: ToolChannel,
        stdout_path: Path,
        stderr_path: Path,
        ask_person: AskPerson,
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
        screen = PromptScreen() if spec.prompts else None
        try:
            state.secrets = resolve_secrets(
                spec.secrets, os.environ, self._settings.worker.secrets_file
            )
        except SecretError as exc:
            result.error = str(exc)
            result.started_at = result.ended_at = datetime.now(UTC)
            return result
        env.update(state.secrets)
        try:
            launched = await launch(
                adapter.launch_argv(spec, attempt.agent_session),
                cwd=spec.cwd,
                env=env,
                stdout_path=stdout_path,
                stderr_path=stderr_path,
                log_cap_bytes=spec.log_cap_bytes,
                tail_lines=spec.tail_lines,
                terminal=screen is not None,
                on_output=screen.feed if screen is not None else None,
            )
        except LaunchError as exc:
            result.error, result.exit_code = str(exc), exc.exit_code
            result.started_at = result.ended_at = datetime.now(UTC)
            return result
        state.launched = launched
        self.ledger.add(
            AttemptRecord(
                run_id=spec.run_id,
                attempt=attempt.attempt,
                pgid=launched.pgid,
                start_time=launched.started_at.timestamp(),
                host=self._host,
            )
        )
        self.running += 1
        decided = [d.decided_at for d in attempt.resume.values() if d.decided_at is not None]
        if decided:  # relaunched after exit-and-relaunch: decision to running again
            metrics.resume_latency(spec.tool_name, (launched.started_at - max(decided)).total_seconds())
        metrics.attempt_started(spec.tool_name)
        # No heartbeat at launch: the first tick sends one, and a tool that ends sooner costs
        # no heartbeat RPC at all.
        answering = None
        if screen is not None:
            answering = start_answering(
                launched, screen, spec.prompts, attempt=attempt.attempt,
                answer_yes=spec.answer_yes, answer_no=spec.answer_no, ask=ask_person,
            )
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
                liveness=spec.liveness,
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
            if answering is not None:
                await stop_answering(answering)
            await drain_output(launched)
            self.ledger.remove(spec.run_id, attempt.attempt)  # supervise() left no member alive
            outcome = ending.outcome if ending else AttemptOutcome.CANCELLED
            metrics.attempt_ended(spec.tool_name, outcome.value, attempt=state.key)
            if outcome is AttemptOutcome.HUNG:
                metrics.hung_kill(spec.tool_name)
        outcome = ending.outcome
        undecided = sorted(state.asked - state.decided)
        # Exit and relaunch: the tool was told a request is pending and exited to be relaunched
        # with the answer. The answer may have come in before it exited; it is relaunched all
        # the same (with nothing left to wait for), or the run would fail on the exit code.
        # An agent's hook deferred its calls instead, and the agent exits its own way.
        if (ending.exit_code == EXIT_AWAIT_DECISION and state.told_pending) or adapter.awaits_decision(
            spec,
            ending.exit_code,
            deferred=sorted(state.deferred),
            undecided=undecided,
            session=state.agent_session,
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
                "message": live.message,
                "agent_session": state.agent_session,
                "agent_calls": state.agent_calls,
            }
        )

    def _beat(self, state: _Attempt) -> None:
        live = state.live()
        if state.launched is not None:
            silent = time.monotonic() - max(state.launched.last_output, state.last_beat)
            metrics.tool_heartbeat_age(state.attempt.spec.tool_name, silent, attempt=state.key)
        activity.heartbeat(live)
        self._sinks.heartbeat(state.attempt.spec.run_id, live)

    def reap_orphans(self) -> None:
        """Kill what workers that died on this host left running (at start, and per relaunch)."""
        self.ledger.reap_orphans()

    def _reap_previous_attempt(self, run_id: str, details: Sequence[Any]) -> None:
        """A relaunch after a lost worker: kill what that attempt, and any dead worker, left here.

        The ledger covers workers that shared this home; the heartbeat details cover the
        previous attempt whatever home its worker had, as long as it ran on this host.
        """
        self.reap_orphans()
        if not details:
            return
        try:
            previous = LiveDetails.model_validate(details[0])  # decoded already: plain JSON values
        except ValidationError as exc:
            log.warning(
                "run %s: the previous attempt's heartbeat details do not parse, so nothing it "
                "left is reaped from them: %s", run_id, str(exc).splitlines()[0],
            )
            return
        if previous.host != self._host or previous.pgid is None:
            return
        if previous.started_at is None:
            log.warning(
                "run %s: the previous attempt's details name process group %d but no start time; "
                "not signalled, as it cannot be told from a reused group", run_id, previous.pgid,
            )
            return
        if kill_recorded_group(previous.pgid, previous.started_at.timestamp()):
            log.warning(
                "run %s: killed process group %d left by attempt %d", run_id, previous.pgid,
                previous.attempt,
            )

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
            ask = ask.model_copy(update={"attempt": state.attempt.attempt})
            record: ApprovalRecord = await _update_through_outages(
                workflow, REQUEST_APPROVAL_UPDATE, ask, ApprovalRecord
            )
            if record.state is not ApprovalState.PENDING:
                state.decided.add(ask.key)
                answer: Decision = record.decision()
                return answer
            notify_pending(record.approval_id, record.expires_at)
            # One id per attempt and key: a retry attaches to the wait the server already has.
            decision: Decision = await _update_through_outages(
                workflow, WAIT_DECISION_UPDATE, ApprovalRef(key=ask.key), Decision,
                update_id=f"{WAIT_DECISION_UPDATE}:{state.key}:{ask.key}",
            )
            state.decided.add(ask.key)
            if decision.decided_at is not None:
                waited = (datetime.now(UTC) - decision.decided_at).total_seconds()
                metrics.resume_latency(state.attempt.spec.tool_name, waited)
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
        spec = state.attempt.spec
        if call.session_id:
            state.agent_session = call.session_id
        screened = adapter.screen(spec, call, spec.cwd or os.getcwd(), datetime.now(UTC))
        if not any(  # a hook handing its wait over re-sends its call: one record per call
            r.tool_use_id == call.tool_use_id and r.approval_key == screened.record.approval_key
            for r in state.agent_calls if r.tool_use_id and r.approval_key
        ):
            state.agent_calls.append(screened.record)
        ask = screened.ask
        if ask is None:
            assert screened.decision is not None
            return screened.decision

        # A hook that hangs up on `pending` ends the agent's turn, unless the adapter says this
        # call must block (Claude keeps one deferred call per exit).
        defer = not call.wait and adapter.may_defer(spec, sorted(state.deferred))

        def pending(approval_id: str, expires_at: datetime) -> None:
            if defer:  # the hook hangs up and the agent exits: relaunch on the decision
                state.deferred.add(ask.key)
                notify_pending(approval_id, expires_at)

        return await self._ask_workflow(workflow, state, ask, pending)

    @activity.defn(name=PROJECT_RUN_ACTIVITY)
    async def project_run(self, update: RunUpdate) -> None:
        """Hand a run's new state to every sink; never fails, never blocks."""
        self._sinks.run_changed(update)
