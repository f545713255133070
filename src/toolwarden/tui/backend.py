"""What the TUI needs from a supervisor, and the incremental loader that keeps it cheap.

The loader never asks for more than one visibility listing per panel per tick; workflow
queries (`status`) go first to the run the operator is looking at, then to runs seen for the
first time, then round-robin to the least recently refreshed live runs, within a budget. So a
fleet of 1,000 runs costs the same per second as a fleet of 50.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from toolwarden.config import Settings
from toolwarden.models import (
    ApprovalState,
    DecideResult,
    PendingApproval,
    RunState,
    RunStatus,
    RunSummary,
)


class RunHandleAPI(Protocol):
    async def status(self) -> RunStatus: ...

    async def cancel(self, reason: str | None = None) -> None: ...


class SupervisorAPI(Protocol):
    """The part of `toolwarden.client.Supervisor` the TUI uses (tests may pass a fake)."""

    settings: Settings

    def get_run(self, run_id: str) -> RunHandleAPI: ...

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        tool: str | None = None,
        approval_state: ApprovalState | None = None,
        running_only: bool = False,
        limit: int | None = 100,
    ) -> list[RunSummary]: ...

    async def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str | None = None,
        response: JsonValue = None,
        acting_user: str | None = None,
    ) -> DecideResult: ...

    def web_ui_url(self, run_id: str) -> str: ...


SupervisorFactory = Callable[[], Awaitable[SupervisorAPI]]


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means Temporal cannot be reached (as opposed to a refused request)."""
    from temporalio.service import RPCError, RPCStatusCode

    from toolwarden.client import Unavailable

    if isinstance(exc, Unavailable | OSError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, RPCError):
        return exc.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,
            RPCStatusCode.UNKNOWN,
        )
    return isinstance(exc, RuntimeError) and "connect" in str(exc).lower()


@dataclass
class RunFilter:
    state: RunState | None = None
    tool: str | None = None

    def describe(self) -> str:
        parts = []
        if self.state is not None:
            parts.append(f"state={self.state.value}")
        if self.tool:
            parts.append(f"tool={self.tool}")
        return " ".join(parts)


@dataclass
class Snapshot:
    """Everything one refresh learned; the app diffs it into its tables."""

    approvals: list[PendingApproval]
    runs: list[RunSummary]
    statuses: dict[str, RunStatus]
    loaded_at: float = field(default_factory=time.monotonic)


class Loader:
    """Loads approvals and runs incrementally, caching each run's last known status."""

    def __init__(
        self,
        supervisor: SupervisorAPI,
        *,
        run_limit: int = 1000,
        status_budget: int = 48,
        concurrency: int = 16,
        status_timeout: float = 2.0,
        retry_after: float = 30.0,
    ) -> None:
        self.supervisor = supervisor
        self.run_limit = run_limit
        self.status_budget = status_budget
        self._semaphore = asyncio.Semaphore(concurrency)
        self.statuses: dict[str, RunStatus] = {}
        self._fetched_at: dict[str, float] = {}
        self.status_timeout = status_timeout
        self.retry_after = retry_after
        # Runs whose status query went unanswered (no worker for them now): skipped for a while,
        # so one silent run never holds up the whole refresh.
        self.silent_until: dict[str, float] = {}
        self._pending: dict[str, tuple[RunStatus, list[PendingApproval]]] = {}

    async def load(self, run_filter: RunFilter, focus: Iterable[str] = ()) -> Snapshot:
        from toolwarden.client import assemble_approvals

        pending_runs, runs = await asyncio.gather(
            self.supervisor.list_runs(
                approval_state=ApprovalState.PENDING, running_only=True, limit=None
            ),
            self.supervisor.list_runs(
                state=run_filter.state, tool=run_filter.tool, limit=self.run_limit
            ),
        )
        pending_ids = [r.run_id for r in pending_runs]
        wanted = self._plan(list(focus), pending_ids, runs)
        await self._fetch(wanted)
        approvals = assemble_approvals(pending_ids, self.statuses, rows_of=self._pending_of)
        keep = set(pending_ids) | {r.run_id for r in runs} | set(focus)
        for run_id in list(self._fetched_at):
            if run_id not in keep:
                self.statuses.pop(run_id, None)
                self._fetched_at.pop(run_id, None)
                self.silent_until.pop(run_id, None)
                self._pending.pop(run_id, None)
        return Snapshot(approvals=approvals, runs=runs, statuses=dict(self.statuses))

    def _pending_of(self, status: RunStatus) -> list[PendingApproval]:
        """The run's pending approvals, the same objects for as long as its status is.

        Most statuses are not queried again on a given refresh; rebuilding hundreds of rows
        anyway would only feed the garbage collector, whose full passes stall the UI.
        """
        from toolwarden.client import approvals_of

        cached = self._pending.get(status.run_id)
        if cached is not None and cached[0] is status:
            return cached[1]
        rows = approvals_of(status)
        self._pending[status.run_id] = (status, rows)
        return rows

    def _plan(
        self, focus: list[str], pending_ids: list[str], runs: list[RunSummary]
    ) -> list[str]:
        """Which runs to query now: focus, then unseen pending runs, then the stalest others."""
        wanted: list[str] = list(dict.fromkeys(focus))
        now = time.monotonic()
        # Every run with a pending approval is queried each tick while there are few of them;
        # past the budget, new ones first and the rest round-robin.
        unseen_pending = [
            r
            for r in pending_ids
            if r not in self.statuses and self.silent_until.get(r, 0.0) <= now
        ]
        wanted += unseen_pending
        budget = max(self.status_budget - len(wanted), 0)
        seen_pending = [r for r in pending_ids if r in self.statuses]
        live_runs = [
            r.run_id
            for r in runs
            if r.run_id not in self.statuses or not self.statuses[r.run_id].state.terminal
        ]
        # A terminal run is queried once (its attempt and result do not change), unless its
        # listing says it changed state since.
        changed = [
            r.run_id
            for r in runs
            if r.run_id in self.statuses
            and r.state is not None
            and self.statuses[r.run_id].state is not r.state
        ]
        candidates = list(dict.fromkeys(seen_pending + changed + live_runs))
        candidates = [
            c for c in candidates if c not in wanted and self.silent_until.get(c, 0.0) <= now
        ]
        candidates.sort(key=lambda r: self._fetched_at.get(r, 0.0))
        return wanted + candidates[:budget]

    async def _fetch(self, run_ids: list[str]) -> None:
        async def one(run_id: str) -> None:
            async with self._semaphore:
                try:
                    status = await asyncio.wait_for(
                        self.supervisor.get_run(run_id).status(), self.status_timeout
                    )
                except TimeoutError:
                    # Queries need a worker; none answers for this run now. Try it later.
                    self.silent_until[run_id] = time.monotonic() + self.retry_after
                    self._fetched_at[run_id] = time.monotonic()
                    return
                except Exception as exc:
                    if is_unavailable(exc) and not isinstance(exc, TimeoutError):
                        raise
                    return  # the run vanished or cannot answer now: keep what we had
            self.silent_until.pop(run_id, None)
            self.statuses[run_id] = status
            self._fetched_at[run_id] = time.monotonic()

        await asyncio.gather(*(one(r) for r in run_ids))
