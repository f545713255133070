"""Chaos: the Temporal server restarts while runs wait for people; nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.support import eventually, free_port, tool
from toolwarden.client import Supervisor, connect_client
from toolwarden.config import ServerSettings
from toolwarden.models import RunState
from toolwarden.worker.devserver import DevServer
from toolwarden.worker.runner import build_worker


@pytest.mark.slow
async def test_runs_survive_a_server_restart(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path / "home", f"127.0.0.1:{port}")
    settings = settings.model_copy(
        update={"server": ServerSettings(port=port, ui_port=0, log_level="error")}
    )
    server = DevServer(settings)
    await server.start()
    try:
        client = await connect_client(settings)
        supervisor = Supervisor(client, settings)
        async with build_worker(client, settings):
            blocking = await supervisor.start_run(
                settings.run_spec(run_id="blocking", argv=[*tool("approval_tool.py"), "k", "Go?"])
            )
            parked = await supervisor.start_run(
                settings.run_spec(
                    run_id="parked", argv=[*tool("approval_tool.py"), "k", "Later?", "--or-exit"]
                )
            )

            async def both_pending() -> bool:
                statuses = await asyncio.gather(blocking.status(), parked.status())
                return all(s.pending_approvals for s in statuses)

            await eventually(both_pending, timeout=60)
            await server.stop()
            server = DevServer(settings)
            await server.start()
            await eventually(both_pending, timeout=120)
            for run_id in ("blocking", "parked"):
                result = await supervisor.decide(f"{run_id}/k", approve=True, by="ops")
                assert result.took_effect
            assert (await blocking.result()).state is RunState.SUCCEEDED
            assert (await parked.result()).state is RunState.SUCCEEDED
    finally:
        await server.stop()
