"""What the routers serve from: built once per worker, reached through `request.app.state`."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from toolwarden.config import Settings
from toolwarden.http.health import HealthChecks
from toolwarden.http.tokens import TokenStore

if TYPE_CHECKING:
    from temporalio.client import Client

    from toolwarden.client import Supervisor
    from toolwarden.http.health import ReadinessProbe


@dataclass(frozen=True)
class HttpServices:
    settings: Settings
    health: HealthChecks
    tokens: TokenStore
    # The API and the page need a Temporal client; a health-only server does not.
    supervisor: Supervisor | None = None
    # The host name this worker writes into the attempts it runs (whose logs it holds).
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def for_worker(
        cls, settings: Settings, client: Client, readiness: ReadinessProbe
    ) -> HttpServices:
        from toolwarden.client import Supervisor

        return cls(
            settings=settings,
            health=HealthChecks(readiness, sdk_metrics_address=settings.worker.sdk_metrics_address),
            tokens=TokenStore(settings.tokens_file),
            supervisor=Supervisor(client, settings),
        )


def get_services(request: Request) -> HttpServices:
    services: HttpServices = request.app.state.services
    return services


Services = Annotated[HttpServices, Depends(get_services)]
