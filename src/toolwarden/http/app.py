"""The worker's one ASGI app, and the uvicorn server that runs it inside the worker's loop.

    services = HttpServices(settings, HealthChecks(probe), TokenStore(settings.tokens_file))
    async with HttpServer(create_app(services), "127.0.0.1:9464") as server:
        ...  # server.port is the bound port (the real one for port 0)

Routers (one module each, all mounted here and nowhere else):
* `toolwarden.http.health`: `/healthz`, `/readyz`, `/metrics` (not in the OpenAPI document);
* `toolwarden.http.api`: the JSON API under `/api/v1` (its OpenAPI at `/api/v1/openapi.json`);
* `toolwarden.http.web`: the approvals page at `/`, when that module exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import socket
from collections.abc import Iterator, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI

from toolwarden import __version__
from toolwarden.http import api, health
from toolwarden.http.address import base_url, parse_address
from toolwarden.http.errors import install_error_handlers
from toolwarden.http.services import HttpServices

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_START_TIMEOUT_S = 10.0
_STOP_GRACE_S = 2  # open streams (log follows) are cut after this on shutdown


def default_routers() -> list[tuple[APIRouter, str]]:
    """(router, prefix) for every router of the app, the page's when it ships."""
    routers = [(health.router, ""), (api.router, API_PREFIX)]
    if importlib.util.find_spec("toolwarden.http.web") is not None:
        routers.append((importlib.import_module("toolwarden.http.web").router, ""))
    return routers


def create_app(
    services: HttpServices, routers: Sequence[tuple[APIRouter, str]] | None = None
) -> FastAPI:
    app = FastAPI(
        title="toolwarden",
        summary="Supervised tool runs and their approvals, on one toolwarden worker.",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    for router, prefix in default_routers() if routers is None else routers:
        app.include_router(router, prefix=prefix)
    return app


class _LoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The worker owns SIGINT/SIGTERM (it drains); uvicorn must not take them over.
        yield


class HttpServer:
    """Serves `app` on `address` (`HOST:PORT`, port may be 0) as a task in the running loop."""

    def __init__(self, app: FastAPI, address: str) -> None:
        self._host, self._port = parse_address(address)
        self.address = address
        self._server = _LoopServer(
            uvicorn.Config(
                app,
                lifespan="off",
                log_config=None,  # keep the worker's logging as it is
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=_STOP_GRACE_S,
            )
        )
        self._socket: socket.socket | None = None
        self._bound_port = self._port
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when `address` asked for port 0)."""
        return self._bound_port

    @property
    def url(self) -> str:
        return base_url(self._host, self.port)

    async def start(self) -> None:
        """Bind (OSError if the address is taken), then serve; returns once serving."""
        if self._task is not None:
            return
        sock = self._bind()
        self._socket = sock
        self._bound_port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the HTTP server on {self.address} stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise OSError(f"the HTTP server on {self.address} did not start in time")
            await asyncio.sleep(0.01)
        log.info("HTTP server listening on %s", self.url)

    def _bind(self) -> socket.socket:
        host = self._host or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        try:
            await task
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
