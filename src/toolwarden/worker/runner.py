"""The toolwarden worker: runs `ToolRunWorkflow`, its activities, the mirror writer and health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from temporalio.client import Client
from temporalio.worker import Worker

from toolwarden.activities.tool_run import ToolActivities
from toolwarden.client import connect_client, ensure_search_attributes
from toolwarden.config import ConfigError, Settings
from toolwarden.files import private_dir
from toolwarden.metrics import MetricsSink
from toolwarden.sinks import RunSink
from toolwarden.workflows.tool_run import ToolRunWorkflow

if TYPE_CHECKING:
    from toolwarden.http.app import HttpServer
    from toolwarden.http.health import Readiness
    from toolwarden.mirror import MirrorWriter
    from toolwarden.notify import ApprovalNotifier

log = logging.getLogger(__name__)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    sinks: Sequence[RunSink] | None = None,
    activities: ToolActivities | None = None,
) -> Worker:
    """A worker for `ToolRunWorkflow`; `sinks` default to metrics alone (no mirror)."""
    worker_settings = settings.worker
    if activities is None:
        activities = ToolActivities(settings, [MetricsSink()] if sinks is None else sinks)
    beat = worker_settings.heartbeat_interval
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.task_queue,
        workflows=[ToolRunWorkflow],
        activities=[activities.run_tool, activities.project_run],
        max_concurrent_activities=worker_settings.max_concurrent_tools,
        max_concurrent_local_activities=worker_settings.max_concurrent_workflow_tasks,
        max_concurrent_workflow_tasks=worker_settings.max_concurrent_workflow_tasks,
        max_cached_workflows=max(1000, worker_settings.max_concurrent_tools * 2),
        graceful_shutdown_timeout=worker_settings.shutdown_grace,
        max_heartbeat_throttle_interval=beat,
        default_heartbeat_throttle_interval=beat,
    )


def start_notifier(settings: Settings) -> ApprovalNotifier | None:
    """The approval notifier sink when `notifications` lists a channel; links signed on this host."""
    if not (settings.notifications.webhooks or settings.notifications.slack or settings.notifications.smtp):
        return None
    from toolwarden.http.links import LinkSigner, load_or_create_key
    from toolwarden.notify import ApprovalNotifier

    try:
        signer = LinkSigner(load_or_create_key(settings.link_key_file), settings.web_base_url)
        return ApprovalNotifier.start(settings, signer.notice_links)
    except (OSError, ValueError) as exc:  # an unreadable secret or key file
        raise ConfigError(f"notifications: {exc}") from exc


class WorkerService:
    """Everything one worker process runs; `toolwarden up` and `toolwarden worker` share it."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.mirror: MirrorWriter | None = None
        self.health: HttpServer | None = None
        self.worker: Worker | None = None
        self.activities: ToolActivities | None = None
        self.draining = False

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        settings = self.settings
        await ensure_search_attributes(self.client, settings.temporal.namespace)
        mirror = self._start_mirror()
        sinks: list[RunSink] = [MetricsSink()]
        if mirror is not None:
            sinks.append(mirror)
        notifier = start_notifier(settings)
        if notifier is not None:
            sinks.append(notifier)
        self.activities = ToolActivities(settings, sinks)
        await asyncio.to_thread(self.activities.reap_orphans)  # before this worker takes work
        self.worker = build_worker(self.client, settings, activities=self.activities)
        health = await self._start_health()
        worker_task = asyncio.create_task(self.worker.run())
        stop_task = asyncio.create_task(stop.wait())
        try:
            if on_ready is not None:
                on_ready()
            done, _ = await asyncio.wait(
                {worker_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if worker_task in done:
                worker_task.result()  # a fatal worker error surfaces here
            else:
                log.info("draining the worker (grace %s)", settings.worker.shutdown_grace)
                self.draining = True  # /readyz turns 503 at once: this worker takes no new work
                await self.worker.shutdown()
                await worker_task
        finally:
            stop_task.cancel()
            if health is not None:
                await health.stop()
            if mirror is not None:
                await asyncio.to_thread(mirror.stop)
            if notifier is not None:
                await asyncio.to_thread(notifier.stop)

    def _start_mirror(self) -> MirrorWriter | None:
        if not self.settings.mirror.enabled:
            return None
        from toolwarden.mirror import MirrorWriter, upgrade

        url = self.settings.mirror_url
        private_dir(self.settings.home)
        try:
            upgrade(url)
        except Exception as exc:  # the mirror is a projection: never a reason not to run
            log.warning("mirror upgrade failed (%s); runs continue, writes will retry", exc)
        writer = MirrorWriter(url, self.settings.mirror)
        writer.start()
        self.mirror = writer
        return writer

    async def _start_health(self) -> HttpServer | None:
        """The worker's HTTP server (health, metrics, API, page) on `worker.health_address`."""
        address = self.settings.worker.health_address
        if not address:
            return None
        from toolwarden.http.app import HttpServer, create_app
        from toolwarden.http.services import HttpServices

        services = HttpServices.for_worker(self.settings, self.client, self.readiness)
        server = HttpServer(create_app(services), address)
        try:
            await server.start()
        except OSError as exc:
            log.warning("HTTP server not started on %s: %s", address, exc)
            return None
        self.health = server
        return server

    async def readiness(self) -> Readiness:
        from toolwarden.http.health import Readiness

        temporal = "connected"
        try:
            await asyncio.wait_for(self.client.service_client.check_health(), timeout=2.0)
        except Exception as exc:
            temporal = f"unreachable: {exc or type(exc).__name__}"[:200]
        polling = self.worker is not None and self.worker.is_running and not self.draining
        mirror_state, backlog, lag = "disabled", None, None
        if self.mirror is not None:
            stats = self.mirror.stats()
            backlog, lag = stats.backlog, stats.lag_seconds
            mirror_state = "ok" if stats.connected else f"degraded: {stats.last_error}"
        return Readiness(
            ready=temporal == "connected" and polling,
            temporal=temporal,
            polling=polling,
            task_queue=self.settings.temporal.task_queue,
            mirror=mirror_state,
            mirror_backlog=backlog,
            mirror_lag_seconds=lag,
            running_tools=self.activities.running if self.activities else 0,
        )


async def serve_worker(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect_client(settings, with_sdk_metrics=True)
    await WorkerService(settings, client).run(stop)
