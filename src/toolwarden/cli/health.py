"""`toolwarden health`: ask a running worker whether it is ready.

Exit codes: 0 ready, 1 answering but not ready, 2 nobody answers at the address (or the
address is unusable). With `--wait`, it keeps asking until the worker is ready or the time is
up, which is what the systemd unit's `ExecStartPost` uses.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import click

from toolwarden.cli.common import CliError, load_or_exit

if TYPE_CHECKING:
    from toolwarden.config import Settings
    from toolwarden.http.health import Readiness

EXIT_READY = 0
EXIT_NOT_READY = 1
EXIT_UNREACHABLE = 2


def _unreachable(message: str) -> CliError:
    return CliError(message, EXIT_UNREACHABLE)


def _settings() -> Settings:
    """`ctx.obj.settings` when the root group set one up, else the settings loaded here."""
    ctx = click.get_current_context(silent=True)
    settings = getattr(ctx.obj, "settings", None) if ctx is not None else None
    if settings is not None:
        return settings  # type: ignore[no-any-return]
    return load_or_exit(None)


def _human(report: Readiness, address: str) -> str:
    problems = report.problems()
    if report.ready:
        first = f"ready: worker at {address}"
        if problems:
            first += f" (degraded: {'; '.join(problems)})"
    else:
        first = f"not ready: worker at {address}: {'; '.join(problems) or 'reported not ready'}"
    mirror = report.mirror
    extras = []
    if report.mirror_backlog is not None:
        extras.append(f"backlog {report.mirror_backlog}")
    if report.mirror_lag_seconds is not None:
        extras.append(f"lag {report.mirror_lag_seconds:.1f}s")
    if extras:
        mirror += f" ({', '.join(extras)})"
    rows = [
        ("temporal", report.temporal),
        ("polling", f"{'yes' if report.polling else 'no'} (task queue {report.task_queue})"),
        ("mirror", mirror),
        ("tools", f"{report.running_tools} running"),
    ]
    return "\n".join([first, *(f"  {name + ':':<10}{value}" for name, value in rows)])


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print the readiness report as JSON.")
@click.option(
    "--address",
    metavar="HOST:PORT",
    default=None,
    help="The worker's health address [default: worker.health_address from the settings].",
)
@click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait per request."
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Keep asking until the worker is ready or SECONDS have passed.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; only the exit code tells.")
def health(as_json: bool, address: str | None, timeout: float, wait_s: float, quiet: bool) -> None:
    """Ask a running worker whether it is ready (exit 0 ready, 1 not ready, 2 no answer)."""
    import httpx

    from toolwarden.http.address import parse_address
    from toolwarden.http.health import describe_error, fetch_readiness

    if address is None:
        address = _settings().worker.health_address
        if not address:
            raise _unreachable(
                "the health endpoint is disabled (worker.health_address is unset); "
                "pass --address HOST:PORT"
            )
    try:
        parse_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--address") from exc

    deadline = time.monotonic() + max(wait_s, 0.0)
    report: Readiness | None = None
    error: BaseException | None = None
    while True:
        try:
            report, error = asyncio.run(fetch_readiness(address, timeout)), None
        except (httpx.HTTPError, OSError, ValueError) as exc:
            report, error = None, exc
        if (report is not None and report.ready) or time.monotonic() >= deadline:
            break
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))

    if report is None:
        assert error is not None
        raise _unreachable(
            f"no toolwarden worker answers at {address} ({describe_error(error)}); "
            "start one with `toolwarden worker` (or `toolwarden up` on a laptop)"
        )
    if not quiet:
        if as_json:
            payload: dict[str, Any] = {"address": address, **report.model_dump(mode="json")}
            click.echo(json.dumps(payload, indent=2))
        else:
            click.echo(_human(report, address))
    if not report.ready:
        raise click.exceptions.Exit(EXIT_NOT_READY)
