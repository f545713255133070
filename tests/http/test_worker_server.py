"""The worker as `toolwarden worker` runs it serves health, metrics and the API on one address."""

from __future__ import annotations

import asyncio

import httpx
from temporalio.client import Client

from tests.conftest import make_settings
from tests.support import eventually, free_port, tool
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.http.tokens import TokenStore
from toolwarden.worker.runner import WorkerService


async def test_one_address_serves_health_metrics_and_the_api(
    settings: Settings, client: Client
) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = make_settings(
        settings.home, settings.temporal.address, worker={"health_address": address}
    )
    service = WorkerService(settings, client)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, on_ready=started.set))
    try:
        await eventually(lambda: started.is_set() or task.done(), what="the worker to start")
        assert not task.done()
        token = TokenStore(settings.tokens_file).create("alice")
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http:
            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, what="/readyz to answer 200")
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert b"toolwarden_worker_ready 1.0" in (await http.get("/metrics")).content
            assert (await http.get("/api/v1/approvals")).status_code == 401

            supervisor = Supervisor(client, settings)
            spec = settings.run_spec(
                run_id=f"srv-{free_port()}", argv=[*tool("approval_tool.py"), "go", "Go?"]
            )
            handle = await supervisor.start_run(spec)
            auth = {"Authorization": f"Bearer {token}"}

            async def listed() -> bool:
                answer = await http.get("/api/v1/approvals", headers=auth)
                return any(p["approval"]["run_id"] == spec.run_id
                           for p in answer.json()["approvals"])

            await eventually(listed, what="the approval in GET /api/v1/approvals")
            answer = await http.post(f"/api/v1/approvals/{spec.run_id}/go/approve", headers=auth)
            assert answer.status_code == 200, answer.text
            assert (await handle.status()).approvals[0].decided_by == "alice"
            await handle.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            await http.get(f"http://{address}/healthz")
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("the HTTP server still answers after the worker stopped")
