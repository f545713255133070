"""`approvals`, `approve` and `reject`: operators decide."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from toolwarden.cli.common import CliError, echo_json, human_seconds, run_async, settings_of, table
from toolwarden.config import Settings
from toolwarden.models import DecideResult, PendingApproval


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also show each approval's details.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (schema in docs/guide.md).")
@click.pass_context
def approvals(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List pending approvals, oldest first."""

    async def go() -> None:
        from toolwarden.client import Supervisor

        settings = settings_of(ctx)
        supervisor = await Supervisor.connect(settings)
        listing = await supervisor.pending_approvals()
        pending = listing.approvals
        if as_json:
            echo_json(listing.model_dump(mode="json"))
        elif not pending and not listing.unanswered_runs:
            click.echo("no pending approvals")
        elif pending:
            _print_pending(pending, show_all)
        if listing.unanswered_runs:
            raise CliError(_unanswered(listing.unanswered_runs, settings.temporal.task_queue))

    run_async(go())


def _unanswered(run_ids: list[str], task_queue: str) -> str:
    shown = ", ".join(run_ids[:5]) + (f" and {len(run_ids) - 5} more" if len(run_ids) > 5 else "")
    return (
        f"{len(run_ids)} run(s) waiting for approval did not answer, so their approvals are not "
        f"listed: {shown} (no worker on task queue '{task_queue}'? start one with "
        "`toolwarden worker` or `toolwarden up`)"
    )


def _print_pending(pending: list[PendingApproval], show_all: bool) -> None:
    now = datetime.now(UTC)
    table(
        [
            [
                p.approval.approval_id,
                p.approval.run_id,
                p.tool_name,
                human_seconds((now - p.approval.requested_at).total_seconds()),
                human_seconds((p.approval.expires_at - now).total_seconds()),
                p.approval.summary[:60],
            ]
            for p in pending
        ],
        ["id", "run", "tool", "age", "expires in", "summary"],
    )
    if show_all:
        for p in pending:
            if p.approval.details is not None:
                click.echo(f"\n{p.approval.approval_id} details:")
                click.echo(json.dumps(p.approval.details, indent=2))


def _report(result: DecideResult) -> None:
    approval = result.approval
    if result.queued or approval is None:
        click.echo(result.message)
    else:
        click.echo(f"{approval.approval_id} {approval.state.value} by {approval.decided_by}")


def _decide(
    settings: Settings,
    approval_id: str,
    *,
    approve: bool,
    by: str | None,
    reason: str | None,
    response: str | None,
) -> None:
    """Decide through the client layer, as the OS user unless `--by` names someone else."""
    # Imported here: the client pulls in temporalio, and `--help` must stay fast.
    from toolwarden.client import InvalidResponse, Supervisor, os_user, parse_response

    try:
        parsed = parse_response(response)
    except InvalidResponse as exc:
        raise click.BadParameter(str(exc), param_hint="--response") from exc
    user = os_user()

    async def go() -> DecideResult:
        supervisor = await Supervisor.connect(settings)
        return await supervisor.decide(
            approval_id,
            approve=approve,
            by=by or user,
            reason=reason,
            response=parsed,
            acting_user=user,
        )

    _report(run_async(go()))


@click.command()
@click.argument("approval_id")
@click.option("--reason", help="Why (recorded, and given to the tool).")
@click.option(
    "--by",
    help="Who decides (default: your OS user; refused while an approver allowlist applies).",
)
@click.option("--response", metavar="JSON", help="JSON handed to the tool with the decision.")
@click.pass_context
def approve(
    ctx: click.Context,
    approval_id: str,
    reason: str | None,
    by: str | None,
    response: str | None,
) -> None:
    """Approve APPROVAL_ID (RUN/KEY, as `toolwarden approvals` lists it)."""
    _decide(
        settings_of(ctx), approval_id, approve=True, by=by, reason=reason, response=response
    )


@click.command()
@click.argument("approval_id")
@click.option("--reason", required=True, help="Why (required; given to the tool).")
@click.option(
    "--by",
    help="Who decides (default: your OS user; refused while an approver allowlist applies).",
)
@click.option("--response", metavar="JSON", help="JSON handed to the tool with the decision.")
@click.pass_context
def reject(
    ctx: click.Context,
    approval_id: str,
    reason: str,
    by: str | None,
    response: str | None,
) -> None:
    """Reject APPROVAL_ID; a reason is required."""
    if not reason.strip():
        raise CliError("a reason is required to reject")
    _decide(
        settings_of(ctx), approval_id, approve=False, by=by, reason=reason, response=response
    )
