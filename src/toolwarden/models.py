"""The vocabulary shared by the workflow, activities, client, CLI, TUI and mirror.

Every model here crosses the Temporal boundary through the SDK's pydantic data converter, so
adding a field *with a default* is always safe for running workflows; renaming or removing one
is not.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

# Run ids are Temporal workflow ids and appear in approval ids ("RUN/KEY"), socket names and
# file names, so they stay within a conservative alphabet.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
APPROVAL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # an environment variable
GATE_KEY = "gate"


def _check_run_id(value: str) -> str:
    if not RUN_ID_PATTERN.match(value):
        raise ValueError(
            f"invalid run id {value!r}: use letters, digits and . _ : - (at most 200)"
        )
    return value


def _check_key(value: str) -> str:
    if not APPROVAL_KEY_PATTERN.match(value):
        raise ValueError(
            f"invalid approval key {value!r}: use letters, digits and . _ : - (at most 128)"
        )
    return value


def _check_secret_name(value: str) -> str:
    if not SECRET_NAME_PATTERN.match(value):
        raise ValueError(
            f"invalid secret name {value!r}: an environment variable name "
            "(letters, digits and _, not starting with a digit)"
        )
    return value


RunId = Annotated[str, AfterValidator(_check_run_id)]
SecretName = Annotated[str, AfterValidator(_check_secret_name)]
ApprovalKey = Annotated[str, AfterValidator(_check_key)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=False, extra="ignore", defer_build=True)


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    HUNG = "hung"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    FAILED_TO_START = "failed_to_start"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in _LIVE_STATES


_LIVE_STATES = frozenset(
    {RunState.PENDING, RunState.RUNNING, RunState.WAITING_APPROVAL, RunState.RETRYING}
)


class AttemptOutcome(StrEnum):
    """How one launch of the tool ended, as the activity classifies it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    HUNG = "hung"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    FAILED_TO_START = "failed_to_start"
    # The tool asked for approval and exited with EXIT_AWAIT_DECISION: relaunch after the
    # decision instead of holding a process and a worker slot for a days-long wait.
    AWAITING_DECISION = "awaiting_decision"


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class ExpiryOutcome(StrEnum):
    """What an unanswered approval means for the tool once its timer fires."""

    REJECT = "reject"
    APPROVE = "approve"


class ApprovalSource(StrEnum):
    TOOL = "tool"
    GATE = "gate"


class Liveness(StrEnum):
    """A sign of life that resets a run's `hang_timeout`."""

    OUTPUT = "output"  # any byte on stdout or stderr
    CPU = "cpu"  # CPU time used by any process of the tool's group
    HEARTBEAT = "heartbeat"  # `toolwarden beat` or any message on the tool's socket


DEFAULT_LIVENESS = (Liveness.OUTPUT, Liveness.HEARTBEAT)


def check_prompt_patterns(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid prompt pattern {pattern!r}: {exc}") from None
    return patterns


class RetryBackoff(Model):
    initial: timedelta = timedelta(seconds=1)
    coefficient: float = 2.0
    maximum: timedelta = timedelta(minutes=5)

    def delay(self, retry_number: int) -> timedelta:
        seconds = self.initial.total_seconds() * self.coefficient ** max(retry_number - 1, 0)
        return timedelta(seconds=min(seconds, self.maximum.total_seconds()))


class AgentKind(StrEnum):
    """A coding agent toolwarden adapts through its own hooks (`--agent`)."""

    CLAUDE = "claude"
    CODEX = "codex"


class AgentMode(StrEnum):
    """How an agent's hook waits for a person: exit and resume (defer) or hold the process."""

    DEFER = "defer"
    BLOCK = "block"


class AgentPolicy(Model):
    """Rules the supervisor applies to an agent's tool calls before asking anyone.

    Rules read `Tool` or `Tool(pattern)` (see `toolwarden.agents.policy`); deny beats ask beats
    allow, and with `defaults` the documented defaults apply after the listed rules.
    """

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    defaults: bool = True


class AgentCallRecord(Model):
    """One tool call of an agent as the supervisor decided it (the policy's audit trail)."""

    at: datetime
    tool_name: str
    summary: str
    tool_use_id: str | None = None
    verdict: str  # allow, deny or ask
    rule: str
    approval_key: str | None = None


class RunSpec(Model):
    """Everything the workflow needs to supervise one tool; resolved from config by the client."""

    run_id: RunId
    tool_name: str
    argv: list[str] = Field(min_length=1)
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # Names only: the worker resolves the values at launch (toolwarden.secrets), so they never
    # enter the history, a query or the mirror.
    secrets: list[SecretName] = Field(default_factory=list)
    profile: str | None = None
    timeout: timedelta | None = None
    hang_timeout: timedelta | None = None
    kill_grace: timedelta = timedelta(seconds=10)
    retries: int = Field(default=0, ge=0)
    backoff: RetryBackoff = Field(default_factory=RetryBackoff)
    log_cap_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    tail_lines: int = Field(default=50, ge=0)
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    worker_loss_retries: int = Field(default=3, ge=0)
    approve_before: str | None = None
    approval_timeout: timedelta = timedelta(hours=24)
    approval_on_expiry: ExpiryOutcome = ExpiryOutcome.REJECT
    approvers: list[str] = Field(default_factory=list)
    # Prompt mode: the tool runs on a pseudo-terminal and a matching prompt becomes an approval.
    prompts: Annotated[list[str], AfterValidator(check_prompt_patterns)] = Field(default_factory=list)
    answer_yes: str = "y"
    answer_no: str = "n"
    liveness: list[Liveness] = Field(default_factory=lambda: list(DEFAULT_LIVENESS), min_length=1)
    agent: AgentKind | None = None
    agent_policy: AgentPolicy = Field(default_factory=AgentPolicy)
    agent_mode: AgentMode = AgentMode.DEFER
    # Claude's hook timeout in the injected settings: how long a blocking hook may wait.
    agent_hook_timeout: timedelta = timedelta(hours=24)


class ApprovalAsk(Model):
    """A tool's request for a decision, as the activity forwards it to the workflow."""

    key: ApprovalKey
    summary: str = Field(min_length=1, max_length=1000)
    details: JsonValue = None
    timeout: timedelta | None = None
    on_expiry: ExpiryOutcome | None = None
    attempt: int = 0


class ApprovalRef(Model):
    """Names one approval of a run (input of the `wait_decision` update)."""

    key: ApprovalKey


class Decision(Model):
    """What the tool receives: the answer to one approval request."""

    key: str
    outcome: ApprovalState
    approved: bool
    by: str | None = None
    reason: str | None = None
    response: JsonValue = None
    decided_at: datetime | None = None


class ApprovalRecord(Model):
    approval_id: str
    run_id: str
    key: str
    summary: str
    details: JsonValue = None
    source: ApprovalSource = ApprovalSource.TOOL
    state: ApprovalState = ApprovalState.PENDING
    on_expiry: ExpiryOutcome = ExpiryOutcome.REJECT
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None
    response: JsonValue = None

    def decision(self) -> Decision:
        approved = self.state is ApprovalState.APPROVED or (
            self.state is ApprovalState.EXPIRED and self.on_expiry is ExpiryOutcome.APPROVE
        )
        return Decision(
            key=self.key,
            outcome=self.state,
            approved=approved,
            by=self.decided_by,
            reason=self.reason,
            response=self.response,
            decided_at=self.decided_at,
        )


def approval_id(run_id: str, key: str) -> str:
    return f"{run_id}/{key}"


def split_approval_id(value: str) -> tuple[str, str]:
    run_id, sep, key = value.rpartition("/")
    if not sep or not run_id or not key:
        raise ValueError(f"invalid approval id {value!r}: expected RUN/KEY")
    return run_id, key


class DecisionSignal(Model):
    """Payload of the `approve` and `reject` signals (also sent by the Go CLI and other SDKs)."""

    key: ApprovalKey
    by: str | None = None
    reason: str | None = None
    response: JsonValue = None


class DecideRequest(Model):
    """Payload of the `decide` update, which reports whether the decision took effect."""

    key: ApprovalKey
    approve: bool
    by: str
    reason: str | None = None
    response: JsonValue = None


class DecideResult(Model):
    """What became of a decision: applied, refused (with the approval as it stands), or queued.

    Queued: no worker answered in time, so the decision went as the durable `approve`/`reject`
    signal instead; it applies when a worker picks the run up, unless the approval was decided
    or expired first. Nothing is known of the approval then (`approval` is None).
    """

    took_effect: bool
    approval: ApprovalRecord | None = None
    message: str
    queued: bool = False


class AuditEntry(Model):
    at: datetime
    kind: str
    key: str | None = None
    by: str | None = None
    detail: str | None = None


class AttemptSpec(Model):
    """Input of the `run_tool` activity: one launch of the tool."""

    spec: RunSpec
    attempt: int
    resume: dict[str, Decision] = Field(default_factory=dict)
    # Events recorded before this launch, for the activity to hand to the sinks.
    recorded: RunUpdate | None = None
    # The agent session the previous attempt left waiting on a decision: resume it.
    agent_session: str | None = None


class LiveDetails(Model):
    """Activity heartbeat details: what a live tool is doing, read back through `describe`."""

    attempt: int = 0
    pid: int | None = None
    pgid: int | None = None
    host: str | None = None
    started_at: datetime | None = None
    last_output_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    progress: float | None = None
    message: str | None = None
    waiting_keys: list[str] = Field(default_factory=list)
    stdout_path: str | None = None
    stderr_path: str | None = None
    tail: list[str] = Field(default_factory=list)


class AttemptResult(Model):
    attempt: int
    outcome: AttemptOutcome
    exit_code: int | None = None
    signal: str | None = None
    error: str | None = None
    pid: int | None = None
    pgid: int | None = None
    host: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False
    tail: list[str] = Field(default_factory=list)
    pending_keys: list[str] = Field(default_factory=list)
    progress: float | None = None
    message: str | None = None
    # An agent run (`RunSpec.agent`): its session id and each tool call the supervisor decided.
    agent_session: str | None = None
    agent_calls: list[AgentCallRecord] = Field(default_factory=list)


class RunStatus(Model):
    """Answer of the `status` query, enriched by the client with the live heartbeat details."""

    run_id: str
    tool_name: str
    argv: list[str]
    state: RunState
    attempt: int = 0
    retry_count: int = 0
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    exit_code: int | None = None
    signal: str | None = None
    error: str | None = None
    last_attempt: AttemptResult | None = None
    live: LiveDetails | None = None
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    spec: RunSpec | None = None

    @property
    def pending_approvals(self) -> list[ApprovalRecord]:
        return [a for a in self.approvals if a.state is ApprovalState.PENDING]


class RunEvent(Model):
    """One entry of a run's append-only event log; `seq` is assigned by the workflow."""

    seq: int
    at: datetime
    kind: str
    data: dict[str, JsonValue] = Field(default_factory=dict)


class RunUpdate(Model):
    """Input of the `project_run` local activity: the run as it is now and its new events."""

    status: RunStatus
    events: list[RunEvent] = Field(default_factory=list)


class CarriedRun(Model):
    """What one execution of a run hands to the next when it continues as new.

    A run with many attempts and approvals would outgrow Temporal's history limits, so between
    attempts it starts a fresh history carrying this. Pending approvals are all carried, so they
    stay decidable; of the decided ones, events and audit only the latest few are (the mirror
    keeps them all).
    """

    attempt: int
    retry_count: int
    started_at: datetime
    next_seq: int  # the seq the next recorded event gets
    executions: int  # executions of this run so far, the one handing over included
    last_attempt: AttemptResult | None = None
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    events: list[RunEvent] = Field(default_factory=list)
    resume: dict[str, Decision] = Field(default_factory=dict)
    agent_session: str | None = None


class RunResult(Model):
    run_id: str
    state: RunState
    exit_code: int | None = None
    signal: str | None = None
    error: str | None = None
    attempt: int = 0
    retry_count: int = 0


class RunSummary(Model):
    """One row of `list`: what visibility alone can tell without querying the workflow."""

    run_id: str
    tool_name: str | None
    state: RunState | None
    approval_state: ApprovalState | None = None
    status: str
    started_at: datetime | None
    ended_at: datetime | None = None


class PendingApproval(Model):
    """One row of `approvals`: a pending request and the run it belongs to."""

    approval: ApprovalRecord
    tool_name: str
    run_state: RunState


class PendingApprovals(Model):
    """What `approvals` lists: every pending approval that could be read, oldest first."""

    approvals: list[PendingApproval]
    # Runs that visibility shows waiting for a person but that did not answer the status query
    # (queries need a worker, and none polls their task queue now): their approvals exist and
    # can still be decided, but cannot be listed.
    unanswered_runs: list[str] = Field(default_factory=list)


AttemptSpec.model_rebuild()  # `recorded` names RunUpdate, defined further down
