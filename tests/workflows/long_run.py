"""Helpers for runs long enough to continue as new: a person who approves as asked, and a look
at each execution's history."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from temporalio.client import Client, WorkflowHistory

from toolwarden.client import RunHandle, Supervisor
from toolwarden.models import ApprovalState, RunEvent, RunStatus


@dataclass
class Approver:
    """Approves every pending approval of one run, as `alice`, until stopped.

    `held-N` (asked by attempt N, see tests/tools/many_approvals.py) is approved only once a
    later attempt has started, so it is pending across any hand-over in between.
    """

    supervisor: Supervisor
    run_id: str
    decided: int = 0

    async def run(self) -> None:
        handle = self.supervisor.get_run(self.run_id)
        while True:
            status = await handle.status()
            if status.state.terminal:
                return
            due = [a.key for a in status.pending_approvals if _due(a.key, status)]
            if due:
                await asyncio.gather(*(self._approve(handle, key) for key in due))
            else:
                await asyncio.sleep(0.05)

    async def _approve(self, handle: RunHandle, key: str) -> None:
        await handle.decide(key, approve=True, by="alice")
        self.decided += 1


def _due(key: str, status: RunStatus) -> bool:
    return not key.startswith("held-") or int(key.removeprefix("held-")) < status.attempt


def pending_across_hand_overs(events: list[RunEvent]) -> set[str]:
    """The approvals asked before some `run_continued` and decided after it."""
    pending: set[str] = set()
    carried: set[str] = set()
    for event in events:
        key = str(event.data.get("key"))
        if event.kind == "approval_requested":
            pending.add(key)
        elif event.kind == "approval_decided":
            pending.discard(key)
        elif event.kind == "run_continued":
            carried |= pending
    decided = {str(e.data.get("key")) for e in events if e.kind == "approval_decided"}
    return carried & decided


@dataclass
class Execution:
    run_id: str
    status: str
    history_length: int
    history: WorkflowHistory


async def executions(client: Client, workflow_id: str) -> list[Execution]:
    """Every execution of one run, oldest first, with its full history."""
    found: list[Execution] = []
    async for listed in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        history = await client.get_workflow_handle(workflow_id, run_id=listed.run_id).fetch_history()
        status = listed.status.name if listed.status else "UNKNOWN"
        found.append(Execution(listed.run_id, status, len(history.events), history))
    found.sort(key=lambda e: e.history.events[0].event_time.ToDatetime())
    return found


def approved(status: RunStatus) -> int:
    return sum(a.state is ApprovalState.APPROVED for a in status.approvals)
