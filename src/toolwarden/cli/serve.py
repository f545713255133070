"""`up`, `server` and `worker`: the long-running processes."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from toolwarden.cli.common import CliError, run_async, settings_of
from toolwarden.config import Settings


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _banner(settings: Settings, started_server: bool) -> str:
    where = settings.temporal.address
    data = f" (data: {settings.server_db_file})" if started_server else " (already running)"
    lines = [
        "toolwarden is up.",
        f"  Temporal  {where}{data}",
        f"  Web UI    {settings.ui_url}",
        f"  Worker    task queue '{settings.temporal.task_queue}', "
        f"up to {settings.worker.max_concurrent_tools} concurrent tools",
    ]
    if settings.worker.health_address:
        lines.append(f"  Health    http://{settings.worker.health_address}/readyz")
        lines.append(
            f"  Approvals http://{settings.worker.health_address}/ "
            "(sign in with a token from `toolwarden token create NAME`)"
        )
    lines += [
        "",
        "Try, in another terminal:",
        "  toolwarden run -- sh -c 'sleep 1; echo hi'",
        "  toolwarden list",
        "  toolwarden approvals",
        "",
        "Ctrl-C stops the worker (running tools get their grace period) and the server.",
    ]
    return "\n".join(lines)


async def _up(settings: Settings) -> None:
    from toolwarden.client import connect_client
    from toolwarden.worker.devserver import DevServer, ServerError, port_answers, split_address
    from toolwarden.worker.runner import WorkerService

    stop = _stop_on_signals()
    host, port = split_address(settings.temporal.address)
    server: DevServer | None = None
    if not port_answers(host, port):
        server = DevServer(settings)
        try:
            await server.start()
        except ServerError as exc:
            raise CliError(str(exc)) from exc
    try:
        client = await connect_client(settings, with_sdk_metrics=True)
        service = WorkerService(settings, client)
        await service.run(stop, on_ready=lambda: click.echo(_banner(settings, server is not None)))
        click.echo("worker drained.")
    finally:
        if server is not None:
            await server.stop()
            click.echo("Temporal server stopped.")


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Log what the worker does.")
@click.pass_context
def up(ctx: click.Context, verbose: bool) -> None:
    """Start the embedded Temporal dev server (SQLite in the data dir) and a worker.

    If a Temporal server already answers at temporal.address, it is used instead.
    """
    _logging(verbose)
    settings = settings_of(ctx)
    run_async(_up(settings))


async def _server(settings: Settings) -> None:
    from toolwarden.worker.devserver import DevServer, ServerError

    stop = _stop_on_signals()
    server = DevServer(settings)
    try:
        await server.start()
    except ServerError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Temporal dev server at {server.address}, Web UI {settings.ui_url}")
    click.echo(f"data: {settings.server_db_file}; log: {server.log_path}")
    try:
        await stop.wait()
    finally:
        await server.stop()


@click.command()
@click.pass_context
def server(ctx: click.Context) -> None:
    """Run only the embedded Temporal dev server, until Ctrl-C or SIGTERM."""
    run_async(_server(settings_of(ctx)))


async def _worker(settings: Settings) -> None:
    from toolwarden.worker.runner import serve_worker

    stop = _stop_on_signals()
    await serve_worker(settings, stop)


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Log what the worker does.")
@click.pass_context
def worker(ctx: click.Context, verbose: bool) -> None:
    """Run a worker against the configured Temporal (address, namespace, TLS from config)."""
    _logging(verbose)
    settings = settings_of(ctx)
    run_async(_worker(settings))
    click.echo("worker drained.")
