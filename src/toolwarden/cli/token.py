"""`toolwarden token`: bearer tokens that let an approver use the HTTP API and the web page.

The token is printed once by `create`; only its hash is kept (`Settings.tokens_file`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from toolwarden.cli.common import CliError, echo_json, settings_of, table

if TYPE_CHECKING:
    from toolwarden.http.tokens import TokenStore


def _store(ctx: click.Context) -> TokenStore:
    from toolwarden.http.tokens import TokenStore

    return TokenStore(settings_of(ctx).tokens_file)


def _expires(value: str | None) -> timedelta | None:
    if value is None or value.strip().lower() == "never":
        return None
    from toolwarden.config import parse_duration

    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from exc
    if not isinstance(parsed, timedelta) or parsed <= timedelta(0):
        raise click.BadParameter(
            f"{value!r} is not a positive duration (e.g. 90d, 12h, or never)",
            param_hint="--expires",
        )
    return parsed


@click.group("token")
def token() -> None:
    """Bearer tokens for the HTTP API and the web page (one approver name each)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--expires",
    default="90d",
    show_default=True,
    metavar="DURATION",
    help="How long the token is valid (`30d`, `12h`, ... or `never`).",
)
@click.pass_context
def create(ctx: click.Context, name: str, expires: str) -> None:
    """Print a new token for approver NAME (shown once; only its hash is kept)."""
    from toolwarden.http.tokens import TokenError

    try:
        secret = _store(ctx).create(name, _expires(expires))
    except TokenError as exc:
        raise CliError(str(exc)) from exc
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_context
def list_tokens(ctx: click.Context, as_json: bool) -> None:
    """The issued tokens: approver, created, expires (never the tokens themselves)."""
    from toolwarden.http.tokens import TokenError

    try:
        records = _store(ctx).list()
    except TokenError as exc:
        raise CliError(str(exc)) from exc
    now = datetime.now(UTC)
    if as_json:
        echo_json(
            {
                "tokens": [
                    {
                        "name": r.name,
                        "created_at": r.created_at.isoformat(),
                        "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                        "expired": r.expired(now),
                    }
                    for r in records
                ]
            }
        )
        return
    if not records:
        click.echo("no tokens (create one with `toolwarden token create NAME`)")
        return
    rows = [
        (
            r.name,
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            "never" if r.expires_at is None else r.expires_at.strftime("%Y-%m-%d %H:%M")
            + (" (expired)" if r.expired(now) else ""),
        )
        for r in records
    ]
    table(rows, ["name", "created", "expires"])


@token.command("revoke")
@click.argument("name")
@click.pass_context
def revoke(ctx: click.Context, name: str) -> None:
    """Revoke every token of approver NAME (takes effect on the next request)."""
    from toolwarden.http.tokens import TokenError

    try:
        count = _store(ctx).revoke(name)
    except TokenError as exc:
        raise CliError(str(exc)) from exc
    if count == 0:
        raise CliError(f"no token for {name!r} (`toolwarden token list` shows them)")
    click.echo(f"revoked {count} token{'s' if count != 1 else ''} of {name}")
