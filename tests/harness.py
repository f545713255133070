"""A scripted supervisor for tool-side tests: records heartbeats and requests, answers on cue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from toolwarden.channel import NotifyPending
from toolwarden.models import ApprovalAsk, ApprovalState, Decision

DECIDED_AT = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Harness:
    run_id: str = "run-7"
    heartbeats: list[tuple[float | None, str | None]] = field(default_factory=list)
    asks: list[ApprovalAsk] = field(default_factory=list)
    answers: dict[str, asyncio.Future[Decision]] = field(default_factory=dict)
    send_pending: bool = True
    raises: Exception | None = None
    cancelled: list[str] = field(default_factory=list)  # requests whose handler was cancelled

    def on_heartbeat(self, progress: float | None, message: str | None) -> None:
        self.heartbeats.append((progress, message))

    def answer(self, key: str) -> asyncio.Future[Decision]:
        if key not in self.answers:
            self.answers[key] = asyncio.get_running_loop().create_future()
        return self.answers[key]

    def decide(self, key: str, outcome: ApprovalState, approved: bool, **extra: Any) -> None:
        self.answer(key).set_result(
            Decision(key=key, outcome=outcome, approved=approved, decided_at=DECIDED_AT, **extra)
        )

    async def on_request(self, ask: ApprovalAsk, notify_pending: NotifyPending) -> Decision:
        self.asks.append(ask)
        if self.raises is not None:
            raise self.raises
        if self.send_pending:
            notify_pending(f"{self.run_id}/{ask.key}", DECIDED_AT)
        try:
            return await self.answer(ask.key)
        except asyncio.CancelledError:
            self.cancelled.append(ask.key)
            raise
