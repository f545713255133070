"""Tokens: only hashes on disk, mode 0600, and the server sees every create, revoke and expiry."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.http.serving import report
from toolwarden.config import Settings
from toolwarden.http.app import HttpServer, create_app
from toolwarden.http.auth import TOKEN_COOKIE
from toolwarden.http.health import HealthChecks, Readiness
from toolwarden.http.services import HttpServices
from toolwarden.http.tokens import TokenError, TokenStore, token_hash


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "tokens.json"


@pytest.fixture
def store(path: Path, clock: Clock) -> TokenStore:
    return TokenStore(path, now=clock)


def test_only_a_hash_is_stored_with_mode_0600(store: TokenStore, path: Path) -> None:
    token = store.create("alice", timedelta(days=90))
    assert token.startswith("tw_") and len(token) > 40
    text = path.read_text()
    assert token not in text
    assert token_hash(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (record,) = json.loads(text)["tokens"]
    assert record["name"] == "alice"
    assert record["expires_at"].startswith("2027-03-03")


def test_verify_names_the_approver(store: TokenStore) -> None:
    alice = store.create("alice")
    bob = store.create("bob")
    assert store.verify(alice) == "alice"
    assert store.verify(bob) == "bob"
    assert store.verify(alice + "x") is None
    assert store.verify("") is None
    assert store.verify("not-a-token") is None


def test_tokens_expire(store: TokenStore, clock: Clock) -> None:
    token = store.create("alice", timedelta(hours=1))
    clock.now += timedelta(minutes=59)
    assert store.verify(token) == "alice"
    clock.now += timedelta(minutes=1)
    assert store.verify(token) is None
    assert store.list()[0].expired(clock.now)


def test_revoke_removes_every_token_of_the_name(store: TokenStore) -> None:
    first, second, other = store.create("alice"), store.create("alice"), store.create("bob")
    assert store.revoke("alice") == 2
    assert store.verify(first) is None and store.verify(second) is None
    assert store.verify(other) == "bob"
    assert store.revoke("alice") == 0
    assert [r.name for r in store.list()] == ["bob"]


def test_another_process_sees_changes_at_once(path: Path) -> None:
    server_side, cli_side = TokenStore(path), TokenStore(path)
    assert server_side.verify("tw_nothing") is None  # no file yet
    token = cli_side.create("alice")
    assert server_side.verify(token) == "alice"
    cli_side.revoke("alice")
    assert server_side.verify(token) is None


@pytest.mark.parametrize("name", ["", "has space", "-dash-first", "x" * 200, "tab\tname"])
def test_bad_names_are_refused(store: TokenStore, name: str) -> None:
    with pytest.raises(TokenError, match="invalid approver name"):
        store.create(name)


def test_non_positive_expiry_is_refused(store: TokenStore) -> None:
    with pytest.raises(TokenError, match="positive"):
        store.create("alice", timedelta(0))


def test_a_corrupt_file_authenticates_nobody_and_says_so(store: TokenStore, path: Path) -> None:
    token = store.create("alice")
    path.write_text("{not json")
    assert store.verify(token) is None
    with pytest.raises(TokenError, match="is not valid"):
        store.list()


# -- over real HTTP -----------------------------------------------------------------------------


async def _ready() -> Readiness:
    return report()


@pytest.fixture
async def server(tmp_path: Path, store: TokenStore) -> AsyncIterator[HttpServer]:
    services = HttpServices(
        settings=Settings(home=tmp_path / "home"), health=HealthChecks(_ready), tokens=store
    )
    async with HttpServer(create_app(services), "127.0.0.1:0") as srv:
        yield srv


async def me(
    server: HttpServer,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10, cookies=cookies) as client:
        return await client.get("/api/v1/me", headers=headers)


async def test_no_token_is_401_with_one_line_json(server: HttpServer) -> None:
    answer = await me(server)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    body = answer.json()
    assert set(body) == {"message"} and "\n" not in body["message"]
    assert "toolwarden token create" in body["message"]


async def test_bearer_header_and_cookie_both_identify(
    server: HttpServer, store: TokenStore
) -> None:
    token = store.create("alice")
    answer = await me(server, headers={"Authorization": f"Bearer {token}"})
    assert (answer.status_code, answer.json()) == (200, {"name": "alice"})
    answer = await me(server, cookies={TOKEN_COOKIE: token})
    assert (answer.status_code, answer.json()) == (200, {"name": "alice"})


async def test_wrong_revoked_and_expired_tokens_are_401(
    server: HttpServer, store: TokenStore, clock: Clock
) -> None:
    token = store.create("alice", timedelta(days=1))
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await me(server, headers={"Authorization": "Bearer tw_guess"})).status_code == 401
    assert (await me(server, headers={"Authorization": f"Basic {token}"})).status_code == 401
    assert (await me(server, headers=bearer)).status_code == 200

    clock.now += timedelta(days=1)
    answer = await me(server, headers=bearer)
    assert answer.status_code == 401
    assert answer.json() == {"message": "invalid, expired or revoked token"}

    fresh = store.create("alice")
    assert (await me(server, headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    TokenStore(store.path).revoke("alice")  # as `toolwarden token revoke` would, elsewhere
    assert (await me(server, headers={"Authorization": f"Bearer {fresh}"})).status_code == 401
