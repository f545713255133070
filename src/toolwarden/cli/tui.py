"""`toolwarden tui`: the operator terminal UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from toolwarden.cli.common import settings_of

if TYPE_CHECKING:
    from toolwarden.tui.loader import SupervisorAPI


@click.command()
@click.option(
    "--by",
    help="Who decides, as recorded with each decision (default: your OS user; refused while an "
    "approver allowlist applies).",
)
@click.pass_context
def tui(ctx: click.Context, by: str | None) -> None:
    """Pending approvals and live runs; approve, reject and cancel with one key."""
    settings = settings_of(ctx)
    from toolwarden.tui.app import make_app

    async def connect() -> SupervisorAPI:
        # Imported here, inside the app's first worker, so the first paint never waits on it.
        from toolwarden.client import Supervisor

        return await Supervisor.connect(settings)

    make_app(connect, settings, approver=by).run()
