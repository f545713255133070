"""The JSON API under `/api/v1`: runs, logs, cancellation and approvals, for a token holder.

Every route needs a token (`toolwarden token create NAME`); a decision is recorded as the
token's name, and nothing in a body can change that. Decisions go through the client's one
decision layer (`Supervisor.decide`), whose refusals map to statuses here:

    unknown run or approval -> 404, approver not allowed -> 403,
    already decided / expired / run ended -> 409 (naming who decided), malformed body -> 422.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from temporalio.service import RPCError, RPCStatusCode

from toolwarden.client import (
    DecisionRefused,
    RefusalReason,
    RunHandle,
    Supervisor,
    SupervisorError,
    UnknownRun,
)
from toolwarden.errors import one_line
from toolwarden.http.auth import Approver
from toolwarden.http.errors import ErrorBody
from toolwarden.http.services import HttpServices, Services
from toolwarden.logfiles import LogFollower, tail_lines
from toolwarden.models import (
    APPROVAL_KEY_PATTERN,
    RUN_ID_PATTERN,
    DecideResult,
    PendingApprovals,
    RunEvent,
    RunState,
    RunStatus,
    RunSummary,
    approval_id,
)

FOLLOW_INTERVAL_S = 0.25
MAX_TAIL_LINES = 10_000

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid token."},
    422: {"model": ErrorBody, "description": "Malformed request (the message says what)."},
    503: {"model": ErrorBody, "description": "Temporal or the run's worker does not answer."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown run or approval."}
}

router = APIRouter(responses=_ERRORS)

RunIdPath = Annotated[str, Path(description="The run's id (its Temporal workflow id).")]


# -- response and request models that exist only for the API -----------------------------------


class RunList(BaseModel):
    runs: list[RunSummary]


class RunDetail(BaseModel):
    """A run's status (attempts, approvals, audit) and its event log in time order."""

    status: RunStatus
    events: list[RunEvent]


class RunLogs(BaseModel):
    """The last lines of a run's newest attempt; stderr lines start with `! `."""

    run_id: str
    host: str | None = Field(description="The host whose worker ran the attempt.")
    source: str = Field(description="`files` (this worker's log files) or `heartbeat`.")
    lines: list[str]


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)


class Accepted(BaseModel):
    message: str


class DecisionRequest(BaseModel):
    """What a decider may say. Who decides is the token's name: there is no `by` here."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=4000)
    response: JsonValue = Field(default=None, description="Handed to the tool with the decision.")


# -- errors -------------------------------------------------------------------------------------

_REFUSAL_STATUS = {
    RefusalReason.UNKNOWN: 404,
    RefusalReason.NOT_ALLOWED: 403,
    RefusalReason.ALREADY_DECIDED: 409,
    RefusalReason.RUN_ENDED: 409,
}


def _supervisor(services: HttpServices) -> Supervisor:
    if services.supervisor is None:
        raise HTTPException(503, "this server has no Temporal client")
    return services.supervisor


def _fail(exc: Exception) -> NoReturn:
    """The one translation of client errors into HTTP answers."""
    if isinstance(exc, DecisionRefused):
        raise HTTPException(_REFUSAL_STATUS[exc.reason], str(exc)) from exc
    if isinstance(exc, UnknownRun):
        raise HTTPException(404, str(exc)) from exc
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.INVALID_ARGUMENT:
        raise HTTPException(422, f"Temporal refused the request: {one_line(exc)}") from exc
    if isinstance(exc, SupervisorError | RPCError | OSError | TimeoutError):
        raise HTTPException(503, one_line(exc)) from exc
    raise exc


def _run(services: HttpServices, run_id: str) -> RunHandle:
    """The run's handle; an id no run can have is unknown, as Temporal would say."""
    if not RUN_ID_PATTERN.match(run_id):
        raise HTTPException(404, f"unknown run {run_id}")
    return _supervisor(services).get_run(run_id)


async def _status(handle: RunHandle) -> RunStatus:
    try:
        return await handle.status()
    except Exception as exc:
        _fail(exc)


# -- runs ---------------------------------------------------------------------------------------


@router.get("/runs", tags=["runs"])
async def list_runs(
    services: Services,
    _: Approver,
    state: Annotated[RunState | None, Query(description="Only runs in this state.")] = None,
    tool: Annotated[str | None, Query(max_length=200, description="Only this tool.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RunList:
    """Runs, newest first, from Temporal's visibility store."""
    try:
        runs = await _supervisor(services).list_runs(state=state, tool=tool, limit=limit)
    except Exception as exc:
        _fail(exc)
    return RunList(runs=runs)


@router.get("/runs/{run_id}", tags=["runs"], responses=_NOT_FOUND)
async def show_run(services: Services, _: Approver, run_id: RunIdPath) -> RunDetail:
    """One run: status, attempts, approvals, audit and event log."""
    handle = _run(services, run_id)
    try:
        status, events = await asyncio.gather(handle.status(), handle.events())
    except Exception as exc:
        _fail(exc)
    return RunDetail(status=status, events=events)


@router.post("/runs/{run_id}/cancel", tags=["runs"], status_code=202, responses={
    **_NOT_FOUND, 409: {"model": ErrorBody, "description": "The run has already ended."},
})
async def cancel_run(
    services: Services,
    name: Approver,
    run_id: RunIdPath,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> Accepted:
    """Ask the run to stop; its tool is stopped and the run ends `cancelled`."""
    reason = f"cancelled by {name}" + (f": {body.reason}" if body and body.reason else "")
    try:
        await _run(services, run_id).cancel(reason)
    except UnknownRun as exc:
        raise HTTPException(404, str(exc)) from exc
    except SupervisorError as exc:  # the one refusal cancel has: the run is over
        raise HTTPException(409, str(exc)) from exc
    except Exception as exc:
        _fail(exc)
    return Accepted(message=f"cancel requested for {run_id}")


# -- logs ---------------------------------------------------------------------------------------


def _attempt_host(status: RunStatus) -> str | None:
    source = status.live or status.last_attempt
    return source.host if source is not None else None


def _heartbeat_tail(status: RunStatus) -> list[str]:
    source = status.live or status.last_attempt
    return list(source.tail) if source is not None else []


@router.get(
    "/runs/{run_id}/logs",
    tags=["runs"],
    response_model=RunLogs,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "JSON lines, or with `follow=1` server-sent events: one `line` "
            "event per line, then `end` when the run ends.",
        },
        404: {
            "model": ErrorBody,
            "description": "Unknown run, or its logs are on another host (the message names it).",
        },
    },
)
async def run_logs(
    request: Request,
    services: Services,
    _: Approver,
    run_id: RunIdPath,
    lines: Annotated[int, Query(ge=0, le=MAX_TAIL_LINES)] = 100,
    follow: Annotated[bool, Query(description="Stream new lines as server-sent events.")] = False,
) -> Response:
    """The newest attempt's last lines, from this worker's files when it ran the attempt."""
    handle = _run(services, run_id)
    status = await _status(handle)
    host = _attempt_host(status)
    if host is not None and host != services.host:
        raise HTTPException(
            404,
            f"the logs of run {run_id} are on host {host}, not on {services.host}: ask the "
            f"worker on {host} (GET /api/v1/runs/{run_id}/logs there)",
        )
    directory = services.settings.logs_dir / run_id
    if follow:
        return StreamingResponse(
            _follow(request, handle, directory),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    found = await asyncio.to_thread(tail_lines, directory, lines) if lines else []
    if found is None:  # no files here (yet, or never): what the tool last reported
        logs = RunLogs(run_id=run_id, host=host, source="heartbeat",
                       lines=_heartbeat_tail(status)[-lines:] if lines else [])
    else:
        logs = RunLogs(run_id=run_id, host=host, source="files", lines=found)
    return Response(logs.model_dump_json(), media_type="application/json")


def _event(kind: str, data: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def _follow(request: Request, handle: RunHandle, directory: Any) -> AsyncIterator[bytes]:
    """Every line of every attempt, then new ones as they come, until the run ends."""
    reader = LogFollower(directory, max_initial_bytes=4 * 1024 * 1024)
    ended = asyncio.ensure_future(handle.result())
    try:
        while True:
            for line in await asyncio.to_thread(reader.read_lines):
                yield _event("line", line)
            if ended.done():
                for line in await asyncio.to_thread(reader.read_lines):
                    yield _event("line", line)
                state = ended.result().state.value if not ended.exception() else "unknown"
                yield _event("end", {"state": state})
                return
            if await request.is_disconnected():
                return
            await asyncio.wait({ended}, timeout=FOLLOW_INTERVAL_S)
    finally:
        ended.cancel()


# -- approvals ----------------------------------------------------------------------------------


@router.get("/approvals", tags=["approvals"])
async def list_approvals(
    services: Services,
    _: Approver,
    all: Annotated[
        bool, Query(description="Also decided, expired and cancelled approvals.")
    ] = False,
) -> PendingApprovals:
    """Pending approvals, oldest first, and the runs that wait but cannot say for what now."""
    try:
        return await _supervisor(services).pending_approvals(include_decided=all)
    except Exception as exc:
        _fail(exc)


_DECISION_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {"model": DecideResult, "description": "Queued: no worker answers the run now."},
    403: {"model": ErrorBody, "description": "The token's approver may not decide this."},
    **_NOT_FOUND,
    409: {"model": ErrorBody, "description": "Already decided or expired (names who decided)."},
}


async def _decide(
    services: HttpServices,
    name: str,
    run_id: str,
    key: str,
    body: DecisionRequest | None,
    *,
    approve: bool,
) -> Response:
    body = body or DecisionRequest()
    if not RUN_ID_PATTERN.match(run_id):
        raise HTTPException(404, f"unknown run {run_id}")
    if not APPROVAL_KEY_PATTERN.match(key):
        raise HTTPException(404, f"unknown approval {run_id}/{key}")
    if not approve and not (body.reason or "").strip():
        raise HTTPException(422, "a reason is required to reject")
    try:
        result = await _supervisor(services).decide(
            approval_id(run_id, key),
            approve=approve,
            by=name,
            reason=body.reason,
            response=body.response,
        )
    except Exception as exc:
        _fail(exc)
    return Response(
        result.model_dump_json(),
        status_code=202 if result.queued else 200,
        media_type="application/json",
    )


@router.post(
    "/approvals/{run_id}/{key}/approve",
    tags=["approvals"],
    response_model=DecideResult,
    responses=_DECISION_ERRORS,
)
async def approve(
    services: Services,
    name: Approver,
    run_id: RunIdPath,
    key: Annotated[str, Path(description="The approval's key within the run.")],
    body: Annotated[DecisionRequest | None, Body()] = None,
) -> Response:
    """Approve as the token's approver; `response` is handed to the tool."""
    return await _decide(services, name, run_id, key, body, approve=True)


@router.post(
    "/approvals/{run_id}/{key}/reject",
    tags=["approvals"],
    response_model=DecideResult,
    responses=_DECISION_ERRORS,
)
async def reject(
    services: Services,
    name: Approver,
    run_id: RunIdPath,
    key: Annotated[str, Path(description="The approval's key within the run.")],
    body: Annotated[DecisionRequest | None, Body()] = None,
) -> Response:
    """Reject as the token's approver; a `reason` is required."""
    return await _decide(services, name, run_id, key, body, approve=False)


class Identity(BaseModel):
    """Who the token names."""

    name: str


@router.get("/me", tags=["auth"])
async def whoami(name: Approver) -> Identity:
    """The approver the request's token names (what a decision would be recorded as)."""
    return Identity(name=name)
