"""`toolwarden beat` and `toolwarden ask`: the tool-side protocol for shell scripts.

These run inside supervised tools, often many times, so they start fast: this module imports
only click and the standard library at module level, and nothing on their path imports
temporalio or pydantic (the protocol and tool modules are standard library only).

`ask` exit codes: 0 approved, 1 rejected, 2 expired, 3 cancelled, 4 error (not supervised, bad
arguments, protocol error), 75 deferred with --exit-and-resume. An expired request whose
on-expiry outcome is "approve" counts as approved (exit 0); `--json` shows the outcome.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import click

from toolwarden.durations import duration_seconds

EXIT_APPROVED = 0
EXIT_REJECTED = 1
EXIT_EXPIRED = 2
EXIT_CANCELLED = 3
EXIT_ERROR = 4
_OUTCOME_EXIT = {
    "approved": EXIT_APPROVED,
    "rejected": EXIT_REJECTED,
    "expired": EXIT_EXPIRED,
    "cancelled": EXIT_CANCELLED,
}


class AskError(click.ClickException):
    """An `ask` failure: one line on stderr, exit 4 (2 would read as "expired")."""

    exit_code = EXIT_ERROR


class _AskUsageError(click.UsageError):
    exit_code = EXIT_ERROR


class _AskCommand(click.Command):
    """Usage errors exit 4 instead of click's 2, which `ask` uses for "expired"."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _AskUsageError(exc.format_message(), exc.ctx) from None


def default_key(summary: str) -> str:
    """A stable key for a summary: a slug plus a short hash, so re-running asks the same key."""
    slug = re.sub(r"[^a-z0-9]+", "-", summary.lower()).strip("-")[:48].strip("-")
    digest = hashlib.sha256(summary.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"ask-{digest}"


def _load_details(value: str | None) -> Any:
    if value is None:
        return None
    source = "--details"
    text = value
    if value.startswith("@"):
        name = value[1:]
        source = f"--details file {name}"
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text("utf-8")
        except OSError as exc:
            raise AskError(f"cannot read {source}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise AskError(f"{source} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise AskError(f"{source} is not valid JSON: {exc}") from None


@click.command(
    "beat",
    short_help="Send one heartbeat from a supervised tool.",
)
@click.option("--progress", type=click.FloatRange(0.0, 1.0), default=None, help="Progress from 0 to 1.")
@click.option("--message", default=None, help="What the tool is doing (at most 1000 chars).")
def beat(progress: float | None, message: str | None) -> None:
    """Tell the supervisor this tool is alive (and how far it got).

    Does nothing and exits 0 outside toolwarden. If the supervisor cannot be reached it warns
    on stderr and still exits 0, so a heartbeat never breaks a script.
    """
    from toolwarden import protocol

    path = os.environ.get(protocol.ENV_SOCKET)
    if not path:
        return
    text = None if message is None else message[: protocol.MAX_MESSAGE_CHARS]
    if text is not None:
        text = text.encode("utf-8", "replace").decode("utf-8")
    line = protocol.encode_heartbeat(progress, text)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(path)
            sock.sendall(line)
    except OSError as exc:
        click.echo(
            f"toolwarden beat: warning: supervisor unreachable at {path}: {exc.strerror or exc}",
            err=True,
        )


@click.command(
    "ask",
    cls=_AskCommand,
    short_help="Ask a person for approval from a supervised tool.",
)
@click.argument("summary")
@click.option("--key", default=None, help="Name of the decision in this run (default: from the summary).")
@click.option("--details", default=None, metavar="JSON|@FILE", help="Details as JSON (≤ 32 KiB).")
@click.option(
    "--timeout",
    default=None,
    metavar="DURATION",
    help="Expire after e.g. 30s, 10m, 2h (default: the run's approval timeout).",
)
@click.option(
    "--on-expiry",
    type=click.Choice(["approve", "reject"]),
    default=None,
    help="Outcome if nobody answers (default: the run's setting).",
)
@click.option(
    "--exit-and-resume",
    is_flag=True,
    help="If no decision is known yet, exit 75 once the request is recorded; the tool is "
    "relaunched with the decision.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole decision, not the response.")
@click.pass_context
def ask(
    ctx: click.Context,
    summary: str,
    key: str | None,
    details: str | None,
    timeout: str | None,
    on_expiry: str | None,
    exit_and_resume: bool,
    as_json: bool,
) -> None:
    """Ask for approval and print the response JSON (or null).

    Exit status: 0 approved, 1 rejected, 2 expired, 3 cancelled, 4 error, 75 deferred
    (--exit-and-resume). Asking again for a decided key answers at once.
    """
    from toolwarden import tool

    key = key or default_key(summary)
    details_value = _load_details(details)
    try:
        timeout_seconds = None if timeout is None else duration_seconds(timeout)
    except ValueError as exc:
        raise AskError(f"--timeout: {exc}") from None
    try:
        if exit_and_resume:
            answer = tool.submit_approval(key, summary, details_value, timeout_seconds, on_expiry)
        else:
            answer = tool.request_approval(key, summary, details_value, timeout_seconds, on_expiry)
    except tool.ApprovalError as exc:
        raise AskError(exc.message) from None
    except ValueError as exc:
        raise AskError(str(exc)) from None
    if isinstance(answer, tool.Pending):
        click.echo(
            f"toolwarden ask: approval {answer.approval_id} is pending; exiting "
            f"{tool.EXIT_AWAIT_DECISION} to be relaunched with the decision",
            err=True,
        )
        ctx.exit(tool.EXIT_AWAIT_DECISION)
    if as_json:
        click.echo(json.dumps(answer.to_json()))
    else:
        click.echo(json.dumps(answer.response))
    if answer.approved:
        ctx.exit(EXIT_APPROVED)
    ctx.exit(_OUTCOME_EXIT.get(answer.outcome, EXIT_ERROR))
