"""Chaos: the Temporal dev server restarted while 100 approvals wait for a person.

Half the tools block in their ask (their process lives on through the restart), half ask with
`--or-exit` (no process while they wait: the run is parked, relaunched on the decision). After
the restart all 100 approvals are listed again, by `Supervisor.pending_approvals` and by the
installed `toolwarden approvals --json`; every one is decided, every tool resumes and every run
succeeds; no process of any of the runs is left.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from tests.chaos.test_worker_kill import processes_of_runs
from tests.conftest import make_settings
from tests.support import eventually, free_port, tool
from tests.worker_process import worker_env
from toolwarden.client import Supervisor, connect_client
from toolwarden.config import ServerSettings, Settings
from toolwarden.models import RunState
from toolwarden.worker.devserver import DevServer
from toolwarden.worker.runner import build_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RUNS = 100
KEY = "go"
TOOLWARDEN = str(Path(sys.executable).parent / "toolwarden")


def note(text: str) -> None:
    """Progress on stderr as it happens, so a run that stalls shows where."""
    print(f"server restart at scale: {text}", file=sys.stderr, flush=True)


async def listed(supervisor: Supervisor, run_ids: set[str]) -> set[str]:
    """The runs among `run_ids` whose approval `KEY` is listed as pending."""
    listing = await supervisor.pending_approvals()
    return {p.approval.run_id for p in listing.approvals if p.approval.key == KEY} & run_ids


async def cli_listed(settings: Settings) -> list[str]:
    """`toolwarden approvals --json`, the installed script: the approval ids it lists.

    Run without blocking the loop: the worker that answers its queries lives in this loop.
    """
    proc = await asyncio.create_subprocess_exec(
        TOOLWARDEN, "approvals", "--json",
        env=worker_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")
    document = json.loads(out)
    assert document["unanswered_runs"] == []
    return [row["approval"]["approval_id"] for row in document["approvals"]]


async def test_100_pending_approvals_survive_a_server_restart(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path / "home",
        f"127.0.0.1:{port}",
        worker={
            "heartbeat_interval": timedelta(seconds=1),
            "heartbeat_timeout": timedelta(seconds=30),  # a loaded 2-core machine
        },
    )
    settings = settings.model_copy(
        update={"server": ServerSettings(port=port, ui_port=0, log_level="error")}
    )
    server = DevServer(settings)
    await server.start()
    stem = uuid.uuid4().hex[:6]
    blocking = {f"block-{stem}-{i:03d}" for i in range(RUNS // 2)}
    parked = {f"park-{stem}-{i:03d}" for i in range(RUNS - len(blocking))}
    run_ids = blocking | parked
    try:
        client = await connect_client(settings)
        supervisor = Supervisor(client, settings)
        async with build_worker(client, settings):
            began = time.monotonic()
            argv = [*tool("approval_tool.py"), KEY, "Go on?"]
            handles = await asyncio.gather(
                *(
                    supervisor.start_run(
                        settings.run_spec(
                            run_id=rid, argv=argv if rid in blocking else [*argv, "--or-exit"]
                        )
                    )
                    for rid in sorted(run_ids)
                )
            )

            async def all_listed() -> bool:
                return await listed(supervisor, run_ids) == run_ids

            # Each listing queries 100 runs: look once a second, not at the default pace.
            await eventually(all_listed, timeout=240, interval=1.0, what=f"all {RUNS} pending")
            note(f"all {RUNS} pending after {time.monotonic() - began:.1f}s")
            pending_in = time.monotonic() - began
            # The blocking half holds a process each through the restart; the parked half none.
            holding = len(processes_of_runs(blocking))

            stopped_at = time.monotonic()
            await server.stop()
            server = DevServer(settings)
            await server.start()
            restart_s = time.monotonic() - stopped_at
            note(f"server restarted in {time.monotonic() - stopped_at:.1f}s")
            await eventually(all_listed, timeout=240, interval=1.0, what=f"all {RUNS} listed again")
            note(f"all listed again {time.monotonic() - stopped_at:.1f}s after the stop")
            relisted_s = time.monotonic() - stopped_at
            by_cli = await cli_listed(settings)
            assert sorted(by_cli) == sorted(f"{rid}/{KEY}" for rid in run_ids)

            note(f"the CLI lists {len(by_cli)}")
            deciding_at = time.monotonic()
            limit = asyncio.Semaphore(20)

            async def approve(rid: str) -> bool:
                async with limit:
                    result = await supervisor.decide(
                        f"{rid}/{KEY}", approve=True, by="ops", reason="chaos"
                    )
                    return result.took_effect

            took_effect = await asyncio.gather(*(approve(rid) for rid in sorted(run_ids)))
            assert all(took_effect), took_effect.count(False)
            note("all decided")
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles)), timeout=300
            )
            finished_s = time.monotonic() - deciding_at
            failures = [
                (r.run_id, r.state.value, r.error) for r in results if r.state is not RunState.SUCCEEDED
            ]
            assert not failures, (len(failures), failures[:3])
            relaunched = sum(1 for r in results if r.run_id in parked and r.attempt == 2)
            assert relaunched == len(parked)
            assert all(r.attempt == 1 for r in results if r.run_id in blocking)
            await eventually(
                lambda: processes_of_runs(run_ids) == [], timeout=30, what="no tool process left"
            )
        print(
            f"\nchaos server restart at scale: {RUNS} approvals pending ({len(blocking)} blocking, "
            f"{holding} processes held; {len(parked)} parked) after {pending_in:.1f}s; "
            f"server restarted in {restart_s:.1f}s; all {RUNS} listed again "
            f"{relisted_s:.1f}s after the stop (CLI lists {len(by_cli)}); decided all and "
            f"every run succeeded in {finished_s:.1f}s ({relaunched} relaunched); "
            "processes left: 0"
        )
    finally:
        await server.stop()
