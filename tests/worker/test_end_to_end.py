"""Operations end to end: a real worker against a real Temporal server.

* readiness follows the Temporal server as it stops and comes back (`/readyz`, `health`);
* `/metrics` moves by the expected amounts after real runs (succeeded, failed, hung, approval);
* a `toolwarden worker` process serves the Temporal SDK's own metrics next to toolwarden's;
* SIGTERM drains a worker: `/readyz` turns 503, the tool gets its grace and is then killed,
  the process exits 0, and the run is relaunched on the next worker (nothing is lost).

Tests that stop a Temporal server start a private one; the session server is never stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import psutil
import pytest
from click.testing import CliRunner, Result
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client, WorkflowExecutionStatus

from tests.conftest import make_settings
from tests.http.serving import http_get
from tests.support import eventually, free_port, tool
from toolwarden import metrics
from toolwarden.cli.health import health
from toolwarden.client import RunHandle, Supervisor, connect_client
from toolwarden.config import ServerSettings, Settings, WorkerSettings
from toolwarden.http.health import Readiness
from toolwarden.models import RunState
from toolwarden.worker.devserver import DevServer
from toolwarden.worker.runner import WorkerService

POLL_INTERVAL = 0.05  # between checks of a condition, not a wait for time to pass

T = TypeVar("T")

SHUTDOWN_GRACE_S = 2.0
KILL_GRACE_S = 1.0
STOP_MARGIN_S = 10.0


# -- helpers ------------------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[T | None]], timeout: float) -> T:
    """`eventually` for async checks, typed: wait for a truthy value and return it."""
    loose = cast(Callable[[], Awaitable[object]], check)
    return cast(T, await eventually(loose, timeout=timeout))


async def readyz(address: str) -> tuple[int, Readiness] | None:
    """`/readyz` as (HTTP status, report), or None when nobody answers."""
    try:
        answer = await http_get(address, "/readyz", 8.0)
    except httpx.HTTPError:
        return None
    return answer.status_code, Readiness.model_validate_json(answer.content)


async def status_is(address: str, code: int) -> Readiness | None:
    got = await readyz(address)
    return got[1] if got is not None and got[0] == code else None


async def scrape(address: str) -> dict[str, Metric]:
    answer = await http_get(address, "/metrics", 10.0)
    assert answer.status_code == 200, answer.content[:500]
    return {f.name: f for f in text_string_to_metric_families(answer.text)}


def sample(families: dict[str, Metric], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    total = 0.0
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def invoke_health(*args: str) -> Result:
    """`toolwarden health` in a thread: it runs its own event loop, the worker runs in ours."""
    return await asyncio.to_thread(CliRunner().invoke, health, list(args))


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group `pgid`."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def private_server_settings(home: Path, **sections: Any) -> Settings:
    port = free_port()
    settings = make_settings(home, f"127.0.0.1:{port}", **sections)
    return settings.model_copy(update={"server": ServerSettings(port=port, ui_port=0, log_level="error")})


class WorkerProcess:
    """`toolwarden worker` as a real process, configured only through TOOLWARDEN_* variables."""

    def __init__(self, settings: Settings, log: Path, **env: str) -> None:
        self.log_path = log
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
        environment.update(
            TOOLWARDEN_HOME=str(settings.home),
            TOOLWARDEN_TEMPORAL__ADDRESS=settings.temporal.address,
            TOOLWARDEN_TEMPORAL__TASK_QUEUE=settings.temporal.task_queue,
            TOOLWARDEN_WORKER__HEALTH_ADDRESS="",
            TOOLWARDEN_WORKER__SDK_METRICS_ADDRESS="",
            TOOLWARDEN_WORKER__HEARTBEAT_INTERVAL="0.5s",
            TOOLWARDEN_MIRROR__ENABLED="false",
        )
        environment.update(env)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "toolwarden.cli", "worker", "-v"],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
async def services() -> AsyncIterator[list[tuple[asyncio.Event, asyncio.Task[None]]]]:
    """In-process WorkerServices started by a test, drained at the end whatever happened."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    yield running
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def start_service(
    settings: Settings,
    client: Client,
    running: list[tuple[asyncio.Event, asyncio.Task[None]]],
) -> WorkerService:
    service = WorkerService(settings, client)
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(service.run(stop, on_ready=started.set))
    running.append((stop, task))
    await eventually(lambda: started.is_set() or task.done(), timeout=30)
    if task.done():
        task.result()  # a failing start surfaces here
    return service


# -- 1. readiness follows the Temporal server --------------------------------------------------


async def test_readiness_flips_when_the_temporal_server_stops_and_comes_back(
    tmp_path: Path, services: list[tuple[asyncio.Event, asyncio.Task[None]]]
) -> None:
    health_address = f"127.0.0.1:{free_port()}"
    settings = private_server_settings(tmp_path / "home", worker={"health_address": health_address})
    server = DevServer(settings)
    await server.start()
    try:
        client = await connect_client(settings)
        await start_service(settings, client, services)

        report = await until(lambda: status_is(health_address, 200), timeout=30)
        assert report.ready and report.temporal == "connected" and report.polling
        assert report.task_queue == settings.temporal.task_queue
        assert (await invoke_health("--address", health_address)).exit_code == 0

        await server.stop()
        report = await until(lambda: status_is(health_address, 503), timeout=30)
        assert not report.ready
        assert report.temporal != "connected"
        assert report.temporal.startswith("unreachable"), report.temporal
        families = await scrape(health_address)
        assert sample(families, "toolwarden_worker_ready") == 0
        down = await invoke_health("--address", health_address)
        assert down.exit_code == 1, down.output
        assert down.output.startswith(f"not ready: worker at {health_address}: temporal ")

        server = DevServer(settings)  # same port, same database file
        await server.start()
        report = await until(lambda: status_is(health_address, 200), timeout=90)
        assert report.temporal == "connected" and report.polling
        assert sample(await scrape(health_address), "toolwarden_worker_ready") == 1
        back = await invoke_health("--address", health_address)
        assert back.exit_code == 0, back.output

        # Ready is not a lie: the reconnected worker runs a tool.
        supervisor = Supervisor(client, settings)
        handle = await supervisor.start_run(
            settings.run_spec(run_id="after-restart", argv=["sh", "-c", "echo back"])
        )
        assert (await asyncio.wait_for(handle.result(), 60)).state is RunState.SUCCEEDED
    finally:
        for stop, _ in services:
            stop.set()
        for _, task in services:
            await asyncio.wait_for(task, timeout=60)
        services.clear()
        await server.stop()


# -- 2. metrics after real runs ----------------------------------------------------------------


async def test_metrics_move_by_the_expected_amounts_after_real_runs(
    client: Client,
    settings: Settings,
    run_id: Any,
    services: list[tuple[asyncio.Event, asyncio.Task[None]]],
) -> None:
    health_address = f"127.0.0.1:{free_port()}"
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"health_address": health_address})}
    )
    await start_service(settings, client, services)
    await until(lambda: status_is(health_address, 200), timeout=30)
    supervisor = Supervisor(client, settings)
    name = f"e2e-metrics-{run_id('x')[-6:]}"
    label = metrics.tool_label(name)

    def counts(families: dict[str, Metric]) -> dict[str, float]:
        return {
            "started": sample(families, "toolwarden_runs_started_total", tool=label),
            "succeeded": sample(families, "toolwarden_runs_ended_total", tool=label, state="succeeded"),
            "failed": sample(families, "toolwarden_runs_ended_total", tool=label, state="failed"),
            "hung": sample(families, "toolwarden_runs_ended_total", tool=label, state="hung"),
            "hung_kills": sample(families, "toolwarden_hung_kills_total", tool=label),
            "hung_attempts": sample(families, "toolwarden_attempts_total", tool=label, outcome="hung"),
            "requested": sample(families, "toolwarden_approvals_requested_total", tool=label),
            "approved": sample(
                families, "toolwarden_approvals_decided_total", tool=label, outcome="approved"
            ),
            "wait": sample(families, "toolwarden_approval_wait_seconds_count", tool=label),
            "resume": sample(families, "toolwarden_decision_to_resume_seconds_count", tool=label),
        }

    before = counts(await scrape(health_address))

    def spec(stem: str, argv: list[str], **overrides: Any) -> Any:
        return settings.run_spec(run_id=run_id(stem), argv=argv, name=name, overrides=overrides)

    ok = await supervisor.start_run(spec("ok", ["sh", "-c", "echo fine"]))
    failed = await supervisor.start_run(spec("fail", ["sh", "-c", "exit 3"]))
    hung = await supervisor.start_run(
        spec("hung", ["sleep", "60"], hang_timeout=timedelta(seconds=1), kill_grace=timedelta(seconds=1))
    )
    asks = await supervisor.start_run(spec("ask", [*tool("approval_tool.py"), "deploy", "Go?"]))

    async def asking(handle: RunHandle) -> bool:
        return bool((await handle.status()).pending_approvals)

    await until(lambda: asking(asks), timeout=30)
    pending = await until(
        lambda: _pending(health_address, label), timeout=15
    )  # the pending gauge sees it while it waits
    assert pending == 1
    decided = await supervisor.decide(f"{asks.run_id}/deploy", approve=True, by="ops")
    assert decided.took_effect

    results = await asyncio.wait_for(
        asyncio.gather(ok.result(), failed.result(), hung.result(), asks.result()), 60
    )
    assert [r.state for r in results] == [
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.HUNG,
        RunState.SUCCEEDED,
    ]
    expected = {
        "started": 4,
        "succeeded": 2,
        "failed": 1,
        "hung": 1,
        "hung_kills": 1,
        "hung_attempts": 1,
        "requested": 1,
        "approved": 1,
        "wait": 1,
        "resume": 1,
    }

    async def moved() -> dict[str, float] | None:
        after = counts(await scrape(health_address))
        delta = {k: after[k] - before[k] for k in after}
        assert delta == expected  # eventually() retries on AssertionError and reports the last
        return delta

    await until(moved, timeout=15)
    assert await _pending(health_address, label) == 0
    families = await scrape(health_address)
    assert sample(families, "toolwarden_tools_running", tool=label) == 0
    assert sample(families, "toolwarden_worker_ready") == 1
    # Never a run id as a label value.
    run_ids = {ok.run_id, failed.run_id, hung.run_id, asks.run_id}
    for family in families.values():
        for s in family.samples:
            assert not run_ids & set(s.labels.values()), s


async def _pending(address: str, label: str) -> float:
    return sample(await scrape(address), "toolwarden_approvals_pending", tool=label)


# -- 3. the SDK's own metrics from a real worker process -----------------------------------------


async def test_a_worker_process_serves_toolwarden_and_sdk_metrics(
    client: Client,
    settings: Settings,
    run_id: Any,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    health_address = f"127.0.0.1:{free_port()}"
    sdk_address = f"127.0.0.1:{free_port()}"
    worker = WorkerProcess(
        settings,
        tmp_path / "worker.log",
        TOOLWARDEN_WORKER__HEALTH_ADDRESS=health_address,
        TOOLWARDEN_WORKER__SDK_METRICS_ADDRESS=sdk_address,
    )
    workers.append(worker)
    await until(lambda: status_is(health_address, 200), timeout=60)

    supervisor = Supervisor(client, settings)
    handle = await supervisor.start_run(
        settings.run_spec(run_id=run_id("sdk"), argv=["sh", "-c", "echo hi"], name="e2e-sdk")
    )
    assert (await asyncio.wait_for(handle.result(), 60)).state is RunState.SUCCEEDED

    async def both() -> dict[str, Metric]:
        families = await scrape(health_address)
        assert sample(families, "toolwarden_runs_ended_total", tool="e2e-sdk") == 1
        assert sample(families, "toolwarden_sdk_metrics_up") == 1
        assert any(n.startswith("temporal_") for n in families), sorted(families)
        return families

    families = await until(both, timeout=15)
    temporal = {n: f for n, f in families.items() if n.startswith("temporal_")}
    counters = {n: f for n, f in temporal.items() if f.type == "counter"}
    assert counters, sorted(temporal)
    for family in counters.values():
        for s in family.samples:
            assert s.name.endswith("_total"), s.name
    # The activity that just ran is counted by the SDK, in seconds.
    assert any(n.startswith("temporal_activity_execution") for n in temporal), sorted(temporal)
    assert not any(n.endswith("_milliseconds") or n.endswith("_ms") for n in temporal)
    assert worker.stop() == 0, worker.output()


# -- 4. graceful stop ---------------------------------------------------------------------------


async def test_sigterm_drains_the_worker_and_the_run_moves_to_the_next_one(
    client: Client,
    settings: Settings,
    run_id: Any,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(
        update={
            "worker": WorkerSettings(
                heartbeat_interval=timedelta(seconds=0.5),
                heartbeat_timeout=timedelta(seconds=20),
                health_address=None,
                sdk_metrics_address=None,
            )
        }
    )
    health_address = f"127.0.0.1:{free_port()}"
    first = WorkerProcess(
        settings,
        tmp_path / "worker-a.log",
        TOOLWARDEN_WORKER__HEALTH_ADDRESS=health_address,
        TOOLWARDEN_WORKER__SHUTDOWN_GRACE=f"{SHUTDOWN_GRACE_S}s",
    )
    workers.append(first)
    await until(lambda: status_is(health_address, 200), timeout=60)

    supervisor = Supervisor(client, settings)
    spec = settings.run_spec(
        run_id=run_id("drain"),
        argv=tool("ignore_term.py"),
        name="e2e-drain",
        overrides={"kill_grace": timedelta(seconds=KILL_GRACE_S)},
    )
    handle = await supervisor.start_run(spec)

    async def tool_ready() -> tuple[int, int] | None:
        live = (await handle.status()).live
        if live and live.pid and live.pgid and "READY" in live.tail:
            return live.pid, live.pgid
        return None

    pid, pgid = await until(tool_ready, timeout=30)
    report = await status_is(health_address, 200)
    assert report is not None and report.running_tools == 1

    first.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    draining: Readiness | None = None
    tool_alive_while_draining = False
    limit = SHUTDOWN_GRACE_S + KILL_GRACE_S + STOP_MARGIN_S
    while first.process.poll() is None:
        assert time.monotonic() - sent < limit, (
            f"worker still running {limit}s after SIGTERM\n{first.output()}"
        )
        if draining is None:
            draining = await status_is(health_address, 503)
            if draining is not None:
                tool_alive_while_draining = psutil.pid_exists(pid) and group_alive(pgid)
        await asyncio.sleep(POLL_INTERVAL)
    took = time.monotonic() - sent

    assert first.process.returncode == 0, first.output()
    assert draining is not None, "/readyz never answered 503 while the worker drained"
    assert not draining.polling and draining.temporal == "connected"
    assert tool_alive_while_draining, "the tool was killed before its shutdown grace"
    assert took >= SHUTDOWN_GRACE_S, f"exited {took:.1f}s after SIGTERM, before the grace"
    await eventually(lambda: not group_alive(pgid), timeout=10)

    # The run is not lost: the draining worker reported the attempt failed as WorkerShutdown,
    # so Temporal retries it (after 1 s, no heartbeat timeout needed) on the next worker.
    # (No query here: with no worker polling, a query fails; describe asks the server alone.)
    description = await client.get_workflow_handle(spec.run_id).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING, description.status
    (activity,) = description.raw_description.pending_activities
    assert activity.attempt == 2, activity
    assert activity.last_failure.application_failure_info.type == "WorkerShutdown", activity
    second = WorkerProcess(settings, tmp_path / "worker-b.log")
    workers.append(second)

    async def relaunched() -> tuple[int, str] | None:
        live = (await handle.status()).live
        if live and live.pid and live.pid != pid and "READY" in live.tail:
            return live.pid, str(live.stdout_path)
        return None

    new_pid, stdout_path = await until(relaunched, timeout=60)
    assert Path(stdout_path).name == "attempt-1.2.stdout.log", stdout_path
    status = await handle.status()
    assert status.state is RunState.RUNNING and status.attempt == 1, status

    await handle.cancel("test over")
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.state is RunState.CANCELLED, result
    await eventually(
        lambda: not psutil.pid_exists(new_pid) or psutil.Process(new_pid).status() == psutil.STATUS_ZOMBIE,
        timeout=10,
    )
    assert second.stop() == 0, second.output()
    assert "Traceback" not in first.output(), first.output()
    assert "Traceback" not in second.output(), second.output()
