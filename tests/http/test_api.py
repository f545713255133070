"""The JSON API over real HTTP, against the real dev server, a real worker and real tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.http.serving import report
from tests.support import eventually, tool
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.http.app import HttpServer, create_app
from toolwarden.http.health import HealthChecks, Readiness
from toolwarden.http.services import HttpServices
from toolwarden.http.tokens import TokenStore
from toolwarden.models import ApprovalState, RunSpec, RunState

pytestmark = pytest.mark.usefixtures("worker")


async def _ready() -> Readiness:
    return report()


@pytest.fixture
def tokens(settings: Settings) -> TokenStore:
    return TokenStore(settings.tokens_file)


@pytest.fixture
def services(settings: Settings, client: Client, tokens: TokenStore) -> HttpServices:
    return HttpServices(
        settings=settings,
        health=HealthChecks(_ready),
        tokens=tokens,
        supervisor=Supervisor(client, settings),
    )


@pytest.fixture
async def server(services: HttpServices) -> AsyncIterator[HttpServer]:
    async with HttpServer(create_app(services), "127.0.0.1:0") as srv:
        yield srv


Api = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def api(server: HttpServer, tokens: TokenStore) -> AsyncIterator[Api]:
    """`api("alice")`: an HTTP client holding a fresh token of alice; `api(None)`: no token."""
    clients: list[httpx.AsyncClient] = []

    def make(name: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {tokens.create(name)}"} if name else {}
        http = httpx.AsyncClient(base_url=f"{server.url}/api/v1", headers=headers, timeout=60)
        clients.append(http)
        return http

    yield make
    for http in clients:
        await http.aclose()


def one_line_error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    assert body["message"] and "\n" not in body["message"]
    return str(body["message"])


async def start(supervisor: Supervisor, spec: RunSpec) -> str:
    await supervisor.start_run(spec)
    return spec.run_id


async def asking(
    supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str], key: str = "deploy",
    **update: Any,
) -> str:
    """Start a tool that asks `key` and wait until the approval is pending; return the run id."""
    spec = settings.run_spec(
        run_id=run_id("api"),
        argv=[*tool("approval_tool.py"), key, f"Approve {key}", "--details", '{"env": "prod"}'],
    ).model_copy(update=update)
    rid = await start(supervisor, spec)

    async def pending() -> bool:
        return bool((await supervisor.get_run(rid).status()).pending_approvals)

    await eventually(pending, what="the approval to be pending")
    return rid


def decision_line(tail: list[str]) -> dict[str, Any]:
    line = next(t for t in tail if t.startswith("DECISION "))
    return json.loads(line.removeprefix("DECISION "))  # type: ignore[no-any-return]


# -- 401 ----------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/runs"),
    ("GET", "/runs/some-run"),
    ("GET", "/runs/some-run/logs"),
    ("POST", "/runs/some-run/cancel"),
    ("GET", "/approvals"),
    ("POST", "/approvals/some-run/k/approve"),
    ("POST", "/approvals/some-run/k/reject"),
    ("GET", "/me"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_a_valid_token(api: Api, method: str, path: str) -> None:
    message = one_line_error(await api(None).request(method, path), 401)
    assert "Bearer" in message
    wrong = api(None)
    wrong.headers["Authorization"] = "Bearer tw_not-issued"
    assert one_line_error(await wrong.request(method, path), 401) == (
        "invalid, expired or revoked token"
    )


# -- approve, and who decided ---------------------------------------------------------------------


async def test_approve_with_a_response_the_tool_receives_as_the_token_name(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    rid = await asking(supervisor, settings, run_id)
    alice = api("alice")

    listed = (await alice.get("/approvals")).json()
    row = next(p for p in listed["approvals"] if p["approval"]["run_id"] == rid)
    assert row["approval"]["details"] == {"env": "prod"}
    assert row["approval"]["state"] == "pending"

    # Identity is the token's: a body naming someone else is malformed, and changes nothing.
    forged = await alice.post(f"/approvals/{rid}/deploy/approve", json={"by": "mallory"})
    assert "by" in one_line_error(forged, 422)
    assert (await supervisor.get_run(rid).status()).pending_approvals

    answer = await alice.post(
        f"/approvals/{rid}/deploy/approve", json={"reason": "ok", "response": {"branch": "main"}}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["took_effect"] is True
    assert answer.json()["approval"]["decided_by"] == "alice"

    result = await supervisor.get_run(rid).result()
    assert result.state is RunState.SUCCEEDED
    detail = (await alice.get(f"/runs/{rid}")).json()
    decision = decision_line(detail["status"]["last_attempt"]["tail"])
    assert (decision["by"], decision["response"]) == ("alice", {"branch": "main"})
    assert any(e["by"] == "alice" for e in detail["status"]["audit"])
    assert detail["events"] and detail["status"]["state"] == "succeeded"

    decided = (await alice.get("/approvals", params={"all": "1"})).json()
    row = next(p for p in decided["approvals"] if p["approval"]["run_id"] == rid)
    assert row["approval"]["state"] == "approved"
    pending_now = (await alice.get("/approvals")).json()
    assert not any(p["approval"]["run_id"] == rid for p in pending_now["approvals"])


async def test_reject_needs_a_reason_and_ends_the_tool(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    rid = await asking(supervisor, settings, run_id)
    bob = api("bob")
    one_line_error(await bob.post(f"/approvals/{rid}/deploy/reject"), 422)
    one_line_error(await bob.post(f"/approvals/{rid}/deploy/reject", json={"reason": " "}), 422)
    answer = await bob.post(f"/approvals/{rid}/deploy/reject", json={"reason": "not today"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["approval"]["state"] == "rejected"
    result = await supervisor.get_run(rid).result()
    assert result.state is RunState.FAILED


# -- 403 ----------------------------------------------------------------------------------------


async def test_an_approver_not_on_the_runs_allowlist_gets_403_and_nothing_changes(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    rid = await asking(supervisor, settings, run_id, approvers=["alice"])
    answer = await api("mallory").post(f"/approvals/{rid}/deploy/approve", json={})
    assert "mallory" in one_line_error(answer, 403)
    status = await supervisor.get_run(rid).status()
    assert [a.state for a in status.approvals] == [ApprovalState.PENDING]
    assert (await api("alice").post(f"/approvals/{rid}/deploy/approve")).status_code == 200


async def test_the_global_allowlist_applies_too(
    api: Api, services: HttpServices, supervisor: Supervisor, settings: Settings,
    run_id: Callable[[str], str],
) -> None:
    rid = await asking(supervisor, settings, run_id)
    strict = settings.model_copy(
        update={"approvals": settings.approvals.model_copy(update={"approvers": ["alice"]})}
    )
    guarded = replace(services, supervisor=Supervisor(supervisor.client, strict))
    async with HttpServer(create_app(guarded), "127.0.0.1:0") as other:
        token = services.tokens.create("bob")
        async with httpx.AsyncClient(base_url=f"{other.url}/api/v1", timeout=60) as http:
            answer = await http.post(
                f"/approvals/{rid}/deploy/approve",
                headers={"Authorization": f"Bearer {token}"},
            )
    assert "bob is not an allowed approver" in one_line_error(answer, 403)
    assert (await supervisor.get_run(rid).status()).pending_approvals


# -- 404 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/runs/no-such-run-x1"),
        ("GET", "/runs/no-such-run-x1/logs"),
        ("POST", "/runs/no-such-run-x1/cancel"),
        ("POST", "/approvals/no-such-run-x1/deploy/approve"),
        ("POST", "/approvals/no-such-run-x1/deploy/reject"),
        ("GET", "/no-such-route"),
    ],
)
async def test_unknown_runs_and_routes_are_404(api: Api, method: str, path: str) -> None:
    body = {"reason": "r"} if path.endswith("/reject") else None
    one_line_error(await api("alice").request(method, path, json=body), 404)


async def test_an_unknown_key_of_a_real_run_is_404_and_changes_nothing(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    rid = await asking(supervisor, settings, run_id)
    answer = await api("alice").post(f"/approvals/{rid}/nope/approve")
    assert "nope" in one_line_error(answer, 404)
    assert len((await supervisor.get_run(rid).status()).pending_approvals) == 1


# -- 409, and the race ----------------------------------------------------------------------------


async def test_two_approvers_race_one_wins_the_other_is_told_who(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    rid = await asking(supervisor, settings, run_id)
    alice, bob = api("alice"), api("bob")
    answers = await asyncio.gather(
        alice.post(f"/approvals/{rid}/deploy/approve", json={"reason": "a"}),
        bob.post(f"/approvals/{rid}/deploy/reject", json={"reason": "b"}),
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 200).json()["approval"]
    loser = next(a for a in answers if a.status_code == 409)
    assert f"by {winner['decided_by']}" in one_line_error(loser, 409)
    # Again, after the run has moved on: still 409, still naming the winner.
    again = await bob.post(f"/approvals/{rid}/deploy/approve")
    assert f"by {winner['decided_by']}" in one_line_error(again, 409)
    status = await supervisor.get_run(rid).status()
    assert status.approvals[0].decided_by == winner["decided_by"]


async def test_an_expired_approval_is_409(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    spec = settings.run_spec(
        run_id=run_id("exp"), argv=[*tool("approval_tool.py"), "late", "Late", "--timeout", "1"]
    )
    rid = await start(supervisor, spec)
    await supervisor.get_run(rid).result()
    answer = await api("alice").post(f"/approvals/{rid}/late/approve")
    assert "expired" in one_line_error(answer, 409)


# -- 422 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/approvals/r/k/approve", b"{not json"),
        ("POST", "/approvals/r/k/approve", b'{"reason": 5}'),
        ("POST", "/approvals/r/k/approve", b'["a list"]'),
        ("POST", "/runs/r/cancel", b'{"reason": "x", "extra": 1}'),
        ("GET", "/runs?state=bogus", None),
        ("GET", "/runs?limit=0", None),
        ("GET", "/runs/r/logs?lines=-1", None),
    ],
)
async def test_malformed_requests_are_422(
    api: Api, method: str, path: str, content: bytes | None
) -> None:
    headers = {"Content-Type": "application/json"} if content is not None else {}
    answer = await api("alice").request(method, path, content=content, headers=headers)
    one_line_error(answer, 422)


# -- runs, cancel, logs ---------------------------------------------------------------------------


async def test_runs_filtered_by_state_and_tool(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    done = settings.run_spec(run_id=run_id("ok"), argv=["echo", "hi"], name="api-echo")
    await supervisor.start_run(done)
    await supervisor.get_run(done.run_id).result()
    alice = api("alice")

    async def listed() -> list[str]:
        answer = await alice.get("/runs", params={"tool": "api-echo", "state": "succeeded"})
        assert answer.status_code == 200, answer.text
        return [r["run_id"] for r in answer.json()["runs"]]

    assert await eventually(listed, what="the run in the listing") == [done.run_id]
    none = await alice.get("/runs", params={"tool": "api-echo", "state": "failed"})
    assert none.json()["runs"] == []


async def test_cancel_then_cancel_again(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    rid = await start(supervisor, settings.run_spec(run_id=run_id("c"), argv=["sleep", "3600"]))
    alice = api("alice")
    answer = await alice.post(f"/runs/{rid}/cancel", json={"reason": "wrong branch"})
    assert answer.status_code == 202, answer.text
    result = await supervisor.get_run(rid).result()
    assert result.state is RunState.CANCELLED
    assert "ended" in one_line_error(await alice.post(f"/runs/{rid}/cancel"), 409)


async def test_logs_tail_and_follow(
    api: Api, supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    script = "for i in 1 2 3; do echo line-$i; done; echo oops >&2; sleep 1; echo late"
    rid = await start(
        supervisor, settings.run_spec(run_id=run_id("logs"), argv=["sh", "-c", script])
    )
    alice = api("alice")
    events: list[tuple[str, Any]] = []
    async with alice.stream("GET", f"/runs/{rid}/logs", params={"follow": "1"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    lines = [data for kind, data in events if kind == "line"]
    assert [x for x in lines if x.startswith("line-") or x == "late"] == [
        "line-1", "line-2", "line-3", "late"
    ]
    assert "! oops" in lines
    assert events[-1] == ("end", {"state": "succeeded"})

    tail = await alice.get(f"/runs/{rid}/logs", params={"lines": 2})
    assert tail.status_code == 200, tail.text
    assert tail.json()["source"] == "files"
    assert len(tail.json()["lines"]) == 2


async def test_logs_of_another_hosts_attempt_name_that_host(
    services: HttpServices, tokens: TokenStore, supervisor: Supervisor, settings: Settings,
    run_id: Callable[[str], str],
) -> None:
    rid = await start(supervisor, settings.run_spec(run_id=run_id("h"), argv=["echo", "x"]))
    await supervisor.get_run(rid).result()
    elsewhere = replace(services, host="not-this-host")
    token = tokens.create("alice")
    async with (
        HttpServer(create_app(elsewhere), "127.0.0.1:0") as other,
        httpx.AsyncClient(base_url=f"{other.url}/api/v1", timeout=60) as http,
    ):
        answer = await http.get(
            f"/runs/{rid}/logs", headers={"Authorization": f"Bearer {token}"}
        )
    message = one_line_error(answer, 404)
    assert services.host in message and "not-this-host" in message


async def test_the_openapi_document(server: HttpServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answer = await http.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    paths = set(doc["paths"])
    assert {
        "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/logs",
        "/api/v1/runs/{run_id}/cancel", "/api/v1/approvals",
        "/api/v1/approvals/{run_id}/{key}/approve", "/api/v1/approvals/{run_id}/{key}/reject",
    } <= paths
    assert "/healthz" not in paths
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
