"""Rebuild the mirror from Temporal, the source of truth, for every run it still retains."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from itertools import islice
from typing import TYPE_CHECKING

from toolwarden.mirror.engine import make_engine
from toolwarden.mirror.migrate import upgrade
from toolwarden.mirror.projection import apply_updates
from toolwarden.models import RunEvent, RunStatus, RunUpdate

if TYPE_CHECKING:
    from toolwarden.config import Settings

log = logging.getLogger(__name__)

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
            updates = [RunUpdate(status=status, events=events) for status, events in chunk]
            with engine.begin() as conn:
                apply_updates(conn, updates)
            total += len({u.status.run_id for u in updates})
    finally:
        engine.dispose()
    return total


async def rebuild_from_temporal(
    settings: Settings,
    *,
    run_ids: Collection[str] | None = None,
    on_skip: Callable[[str, BaseException], None] | None = None,
) -> int:
    """Fetch every retained run's status and events from Temporal and rebuild the mirror.

    `status()` and `events()` are workflow queries, so a worker must be polling the runs' task
    queue. A run that cannot be read is skipped (reported through `on_skip`, else logged) and
    the rest are still rebuilt. `run_ids` limits the rebuild to those runs.
    """
    from toolwarden.client import Supervisor

    sup = await Supervisor.connect(settings)
    if run_ids is None:
        ids = [summary.run_id for summary in await sup.list_runs(limit=None)]
    else:
        ids = list(run_ids)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def fetch(run_id: str) -> tuple[RunStatus, list[RunEvent]] | None:
        async with semaphore:
            handle = sup.get_run(run_id)
            try:
                return await handle.status(), await handle.events()
            except Exception as exc:  # one unreadable run must not stop the others
                if on_skip is not None:
                    on_skip(run_id, exc)
                else:
                    log.warning("rebuild: skipped run %s: %s", run_id, exc)
                return None

    total = 0
    for start in range(0, len(ids), BATCH):
        fetched = await asyncio.gather(*(fetch(r) for r in ids[start : start + BATCH]))
        items = [item for item in fetched if item is not None]
        total += await asyncio.to_thread(rebuild, settings.mirror_url, items)
    if not ids:
        await asyncio.to_thread(rebuild, settings.mirror_url, [])
    return total
