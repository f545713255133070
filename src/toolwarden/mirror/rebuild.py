"""Rebuild the mirror from Temporal, the source of truth, for every run it still retains."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING

from toolwarden.mirror.engine import make_engine
from toolwarden.mirror.migrate import upgrade
from toolwarden.mirror.projection import apply_updates
from toolwarden.models import MirrorUpdate, RunEvent, RunStatus

if TYPE_CHECKING:
    from toolwarden.config import Settings

BATCH = 200
CONCURRENCY = 16


def rebuild(url: str, items: Iterable[tuple[RunStatus, list[RunEvent]]]) -> int:
    """Upgrade the schema to head, then upsert every run, approval and event; return runs written.

    Safe on a live mirror: the upserts are idempotent and never move a row backwards.
    """
    upgrade(url)
    engine = make_engine(url)
    total = 0
    try:
        iterator = iter(items)
        while chunk := list(islice(iterator, BATCH)):
            updates = [MirrorUpdate(status=status, events=events) for status, events in chunk]
            with engine.begin() as conn:
                apply_updates(conn, updates)
            total += len({u.status.run_id for u in updates})
    finally:
        engine.dispose()
    return total


async def rebuild_from_temporal(settings: Settings) -> int:
    """Fetch every retained run's status and events from Temporal and rebuild the mirror."""
    from toolwarden.client import Supervisor

    sup = await Supervisor.connect(settings)
    summaries = await sup.list_runs(limit=None)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def fetch(run_id: str) -> tuple[RunStatus, list[RunEvent]]:
        async with semaphore:
            handle = sup.get_run(run_id)
            status = await handle.status()
            events = await handle.events()
            return status, events

    total = 0
    run_ids = [summary.run_id for summary in summaries]
    for start in range(0, len(run_ids), BATCH):
        items = await asyncio.gather(*(fetch(r) for r in run_ids[start : start + BATCH]))
        total += await asyncio.to_thread(rebuild, settings.mirror_url, items)
    return total
