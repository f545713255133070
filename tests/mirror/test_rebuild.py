"""A deleted mirror rebuilt from the runs' final statuses and events matches the lost one."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.mirror.conftest import T0, live, make_approval, make_events, make_status
from tests.support import eventually, tool
from toolwarden.config import MirrorSettings, Settings
from toolwarden.mirror import MirrorWriter, downgrade, make_engine
from toolwarden.mirror.rebuild import rebuild
from toolwarden.mirror.schema import approvals, run_events, tool_runs
from toolwarden.models import (
    ApprovalState,
    DecisionSignal,
    RunEvent,
    RunState,
    RunStatus,
    RunUpdate,
)
from toolwarden.workflows import REJECT_SIGNAL

# Written by heartbeats only, or recording when rather than what: not restorable.
NOT_REBUILT = {"mirrored_at", "last_heartbeat_at", "last_output_at"}


def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "runs": [
                    {k: v for k, v in r._asdict().items() if k not in NOT_REBUILT}
                    for r in conn.execute(select(tool_runs).order_by(tool_runs.c.run_id))
                ],
                "approvals": [
                    r._asdict() for r in conn.execute(select(approvals).order_by(approvals.c.approval_id))
                ],
                "events": [
                    {k: v for k, v in r._asdict().items() if k != "id"}
                    for r in conn.execute(select(run_events).order_by(run_events.c.run_id, run_events.c.seq))
                ],
            }
    finally:
        engine.dispose()


def history(run_id: str, final: RunState) -> list[RunUpdate]:
    """The snapshots a worker would have submitted over one run's life."""
    ask = make_approval(run_id, "go", requested_at=T0 + timedelta(seconds=5))
    done = make_approval(
        run_id,
        "go",
        state=ApprovalState.APPROVED,
        requested_at=T0 + timedelta(seconds=5),
        decided_after=timedelta(seconds=20),
        by="ann",
    )
    end = T0 + timedelta(minutes=3)
    return [
        RunUpdate(status=make_status(run_id, live=live()), events=make_events(1, 3)),
        RunUpdate(
            status=make_status(run_id, updated_at=T0 + timedelta(seconds=5), approvals=[ask]),
            events=make_events(3, 4),
        ),
        RunUpdate(
            status=make_status(run_id, state=final, ended_at=end, approvals=[done], attempt=2, retry_count=1),
            events=make_events(4, 9),
        ),
    ]


def test_rebuild_matches_the_lost_mirror(db_url: str) -> None:
    writer = MirrorWriter(db_url, MirrorSettings(heartbeat_write_interval=timedelta(0)), retry_initial=0.05)
    writer.start()
    lives = {
        f"run-{i}": history(f"run-{i}", RunState.SUCCEEDED if i % 2 else RunState.HUNG) for i in range(6)
    }
    for updates in lives.values():
        writer.submit(updates[0])
        writer.heartbeat(updates[0].status.run_id, live(message="busy"))
        for update in updates[1:]:
            writer.submit(update)
    writer.stop(timeout=20)
    lost = dump(db_url)
    assert len(lost["runs"]) == 6 and len(lost["events"]) == 6 * 8

    downgrade(db_url, "base")  # the mirror is gone
    items: list[tuple[RunStatus, list[RunEvent]]] = [
        (updates[-1].status, [e for u in updates for e in u.events]) for updates in lives.values()
    ]
    assert rebuild(db_url, items) == 6
    assert dump(db_url) == lost
    # Rebuilding on top of a live mirror changes nothing.
    assert rebuild(db_url, items) == 6
    assert dump(db_url) == lost


def test_rebuild_creates_a_missing_sqlite_mirror(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'mirror.db'}"
    assert rebuild(url, [(make_status("r1"), make_events(1, 3))]) == 1
    assert len(dump(url)["events"]) == 2


@pytest.mark.skipif(importlib.util.find_spec("toolwarden.client") is None, reason="toolwarden.client missing")
async def test_rebuild_from_temporal_matches_what_the_worker_wrote(
    client: Any, settings: Settings, run_id: Any
) -> None:
    from toolwarden.client import Supervisor
    from toolwarden.mirror.rebuild import rebuild_from_temporal
    from toolwarden.worker.runner import build_worker

    url = f"sqlite:///{settings.home / 'mirror.db'}"
    settings = settings.model_copy(
        update={"mirror": MirrorSettings(url=url, heartbeat_write_interval=timedelta(0))}
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    writer = MirrorWriter(url, settings.mirror, retry_initial=0.05)
    writer.start()
    supervisor = Supervisor(client, settings)
    try:
        async with build_worker(client, settings, mirror=writer):
            ok = await supervisor.start_run(
                settings.run_spec(run_id=run_id("ok"), argv=["sh", "-c", "echo hi"])
            )
            bad = await supervisor.start_run(
                settings.run_spec(run_id=run_id("bad"), argv=["sh", "-c", "exit 7"])
            )
            gated = await supervisor.start_run(
                settings.run_spec(run_id=run_id("gate"), argv=["true"], overrides={"approve_before": "Go?"})
            )
            # A refusal while the tool runs is recorded after the activity projected the end.
            go = settings.home / "go"
            refused = await supervisor.start_run(
                settings.run_spec(run_id=run_id("refused"), argv=[*tool("wait_for_file.py"), str(go)])
            )
            await eventually(lambda: _live(refused.status))
            await refused._handle.signal(REJECT_SIGNAL, DecisionSignal(key="nope", by="mallory"))
            await eventually(lambda: _audited(refused.status))
            go.touch()
            await eventually(lambda: _pending(gated.status))
            await supervisor.decide(f"{gated.run_id}/gate", approve=True, by="ann")
            for handle in (ok, bad, gated, refused):
                await handle.result()
            runs = {ok.run_id, bad.run_id, gated.run_id, refused.run_id}

            async def caught_up() -> bool:
                rows = {r["run_id"]: r for r in dump(url)["runs"]}
                statuses = [await supervisor.get_run(r).status() for r in runs]
                return all(
                    s.run_id in rows
                    and rows[s.run_id]["state"] == s.state.value
                    and rows[s.run_id]["updated_at"] == s.updated_at
                    for s in statuses
                )

            await eventually(caught_up)
            await eventually(lambda: writer.stats().backlog == 0)
            writer.stop(timeout=10)
            lost = dump(url)
            by_id = {r["run_id"]: r for r in lost["runs"]}
            assert by_id[ok.run_id]["pid"] and by_id[bad.run_id]["exit_code"] == 7
            assert by_id[ok.run_id]["command"] == ["sh", "-c", "echo hi"]
            assert any(
                a["approval_id"] == f"{gated.run_id}/gate" and a["state"] == "approved"
                for a in lost["approvals"]
            )
            assert {e["run_id"] for e in lost["events"]} == runs

            for suffix in ("", "-wal", "-shm"):
                Path(f"{settings.home / 'mirror.db'}{suffix}").unlink(missing_ok=True)
            # Statuses are workflow queries: the rebuild needs a worker, like in production.
            written = await rebuild_from_temporal(settings, run_ids=sorted(runs))
    finally:
        writer.stop(timeout=10)
    assert written == 4
    assert dump(url) == lost
    kinds = [e["kind"] for e in lost["events"] if e["run_id"] == refused.run_id]
    assert kinds[-3:] == ["attempt_ended", "run_ended", "approval_refused"]


async def _pending(status: Any) -> bool:
    return bool((await status()).pending_approvals)


async def _live(status: Any) -> bool:
    return (await status()).live is not None


async def _audited(status: Any) -> bool:
    return bool((await status()).audit)
