"""The approvals page at `/`: server-rendered Jinja2, a little JavaScript shipped in the package.

Pages: sign in with a token (kept in the HttpOnly, SameSite=Strict `toolwarden_token` cookie),
the inbox of pending approvals with approve/reject forms, the runs list, a run's page, and the
confirmation page of a signed decision link (`toolwarden.http.links`). Every decision goes
through `Supervisor.decide` as the signed-in approver (or the approver a link was issued to);
nothing in a form names who decides.

Every form carries a CSRF token: for a signed-in browser, an HMAC of its session token; for the
sign-in form, a random value also set as a cookie (double submit); for a link, an HMAC of the
link id. A GET never changes anything, so a mail scanner that fetches a link decides nothing.

The page updates itself by short polling (`static/live.js` fetches the same URL with
`?partial=1` every few seconds and swaps the live region, unless someone is typing in a form),
and says so when the worker stops answering: the page is served by the worker itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import JsonValue

from toolwarden.client import (
    DecisionRefused,
    RefusalReason,
    Supervisor,
    SupervisorError,
    Unavailable,
    UnknownRun,
    parse_response,
)
from toolwarden.http.auth import TOKEN_COOKIE
from toolwarden.http.links import (
    LinkAction,
    LinkClaims,
    LinkRefused,
    LinkSigner,
    UsedLinks,
    load_or_create_key,
)
from toolwarden.http.services import HttpServices, Services
from toolwarden.logfiles import tail_lines
from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    AttemptResult,
    RunEvent,
    RunStatus,
    split_approval_id,
)

log = logging.getLogger(__name__)

CSRF_COOKIE = "toolwarden_csrf"
POLL_SECONDS = 3
_STATIC = {"style.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}
_SECURITY_HEADERS = {
    # Scripts and styles only from this server; no framing; no Referer, which would carry a
    # link's token to any page it leads to.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("toolwarden.http", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
templates = Jinja2Templates(env=_environment)


# --- what the routes share ------------------------------------------------------------------


@dataclass(frozen=True)
class WebKeys:
    """The worker host's link signer and used-link record, made once per app."""

    signer: LinkSigner
    used: UsedLinks
    key: bytes

    def csrf(self, purpose: str, subject: str) -> str:
        message = f"{purpose}:{hashlib.sha256(subject.encode()).hexdigest()}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()


def web_keys(request: Request, services: HttpServices) -> WebKeys:
    keys: WebKeys | None = getattr(request.app.state, "web_keys", None)
    if keys is None:
        settings = services.settings
        key = load_or_create_key(settings.link_key_file)
        keys = WebKeys(LinkSigner(key, settings.web_base_url), UsedLinks(settings.used_links_file), key)
        request.app.state.web_keys = keys
    return keys


@dataclass(frozen=True)
class Viewer:
    name: str
    csrf: str


def _session_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(TOKEN_COOKIE) or None


def viewer(request: Request, services: HttpServices) -> Viewer | None:
    token = _session_token(request)
    if token is None:
        return None
    name = services.tokens.verify(token)
    if name is None:
        return None
    return Viewer(name, web_keys(request, services).csrf("session", token))


def _secure(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response


def page(
    request: Request, template: str, status_code: int = 200, **context: Any
) -> Response:
    context.setdefault("title", "toolwarden")
    context.setdefault("viewer", None)
    context.setdefault("banner", None)
    context.setdefault("poll", 0)
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    return _secure(response)


def _to_signin(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _secure(RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303))


def _supervisor(services: HttpServices) -> Supervisor:
    if services.supervisor is None:
        raise Unavailable("this server has no Temporal client: start it with `toolwarden worker`")
    return services.supervisor


def _safe_next(target: str | None) -> str:
    # Only a path on this server: never an absolute URL or a scheme-relative one.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")


# --- formatting helpers for the templates ---------------------------------------------------


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "-"
    return span((now or datetime.now(UTC)) - moment)


def span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "0s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def pretty_json(value: JsonValue) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def shown_in_full(details: JsonValue) -> list[tuple[str, str]]:
    """(label, text) of a command or a diff in the details, to show whole and unwrapped."""
    if not isinstance(details, dict):
        return []
    shown = []
    for name in ("command", "cmd", "argv", "diff", "patch"):
        value = details.get(name)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown.append((name, " ".join(str(v) for v in value)))
        elif isinstance(value, str):
            shown.append((name, value))
    return shown


def diff_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "diff-file"
    if line.startswith("+"):
        return "diff-add"
    if line.startswith("-"):
        return "diff-del"
    if line.startswith("@@"):
        return "diff-hunk"
    return ""


def dom_id(value: str) -> str:
    """An HTML id from an approval id or key (which may hold / and :)."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value) + "-" + hashlib.sha1(
        value.encode()
    ).hexdigest()[:6]


_environment.filters.update(
    ago=ago, span=span, pretty_json=pretty_json, diff_class=diff_class, dom_id=dom_id
)
_environment.globals.update(shown_in_full=shown_in_full, poll_seconds=POLL_SECONDS)


def attempts_of(events: list[RunEvent], status: RunStatus) -> list[dict[str, Any]]:
    """One row per launch, from the run's event log."""
    rows: dict[int, dict[str, Any]] = {}
    for event in events:
        number = event.data.get("attempt")
        if not isinstance(number, int):
            continue
        row = rows.setdefault(number, {"attempt": number, "started_at": None, "ended_at": None,
                                       "outcome": None, "exit_code": None, "signal": None})
        if event.kind == "attempt_started":
            row["started_at"] = event.at
        elif event.kind == "attempt_ended":
            row.update(ended_at=event.at, outcome=event.data.get("outcome"),
                       exit_code=event.data.get("exit_code"), signal=event.data.get("signal"))
    last: AttemptResult | None = status.last_attempt
    if last is not None and last.attempt in rows and rows[last.attempt]["outcome"] is None:
        rows[last.attempt].update(ended_at=last.ended_at, outcome=last.outcome.value,
                                  exit_code=last.exit_code, signal=last.signal)
    return [rows[n] for n in sorted(rows)]


LOG_TAIL_LINES = 200


async def log_tail(services: HttpServices, status: RunStatus) -> tuple[list[str], str]:
    """The last lines of the tool's output, and where they come from.

    The log files live on the host that ran the attempt: read them when that is this worker,
    else show the tail the tool last reported by heartbeat and name the host that has the rest.
    """
    source = status.live or status.last_attempt
    host = source.host if source is not None else None
    heartbeat = list(source.tail) if source is not None else []
    if host is not None and host != services.host:
        return heartbeat, f"the last lines the tool reported; the full log is on host {host}"
    found = await asyncio.to_thread(
        tail_lines, services.settings.logs_dir / status.run_id, LOG_TAIL_LINES
    )
    if found:
        return found, f"the log files on {services.host} (stderr lines start with !)"
    return heartbeat, "the last lines the tool reported"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    status_code: int


_REFUSAL_STATUS = {
    RefusalReason.UNKNOWN: 404,
    RefusalReason.NOT_ALLOWED: 403,
    RefusalReason.ALREADY_DECIDED: 409,
    RefusalReason.RUN_ENDED: 409,
}


async def decide(
    supervisor: Supervisor, approval_id: str, *, approve: bool, by: str, reason: str | None,
    response: JsonValue,
) -> Outcome:
    """Decide through the one decision layer; a refusal is a message, never a crash."""
    try:
        result = await supervisor.decide(
            approval_id, approve=approve, by=by, reason=reason or None, response=response
        )
    except DecisionRefused as exc:
        return Outcome(False, str(exc), _REFUSAL_STATUS.get(exc.reason, 409))
    except UnknownRun as exc:
        return Outcome(False, str(exc), 404)
    except SupervisorError as exc:  # Temporal unreachable: nothing was decided
        return Outcome(False, " ".join(str(exc).split()), 503)
    if result.queued:
        return Outcome(True, result.message, 202)
    verb = "approved" if approve else "rejected"
    return Outcome(True, f"{approval_id} {verb} by {by}", 200)


# --- sign in and out --------------------------------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request, next: str | None = None) -> Response:
    csrf = secrets.token_urlsafe(24)
    response = page(request, "signin.html", title="Sign in", csrf=csrf, next=_safe_next(next), error=None)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/signin",
                        secure=request.url.scheme == "https")
    return response


@router.post("/signin", response_class=HTMLResponse)
async def signin(
    request: Request,
    services: Services,
    token: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not _csrf_ok(expected, csrf):
        return page(request, "signin.html", 400, csrf=expected or secrets.token_urlsafe(24),
                    next=_safe_next(next), error="the sign-in form expired: please try again")
    name = services.tokens.verify(token.strip()) if token.strip() else None
    if name is None:
        return page(request, "signin.html", 401, csrf=expected, next=_safe_next(next),
                    error="that token is not valid (it may be expired or revoked)")
    response = _secure(RedirectResponse(_safe_next(next), status_code=303))
    response.set_cookie(TOKEN_COOKIE, token.strip(), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=30 * 86400)
    response.delete_cookie(CSRF_COOKIE, path="/signin")
    return response


@router.post("/signout")
async def signout(
    request: Request, services: Services, csrf: Annotated[str, Form()] = ""
) -> Response:
    who = viewer(request, services)
    if who is not None and not _csrf_ok(who.csrf, csrf):
        return page(request, "message.html", 400, viewer=who, title="Not signed out",
                    message="the form expired: reload the page and try again")
    response = _secure(RedirectResponse("/signin", status_code=303))
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return response


# --- the inbox and the decision form --------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def inbox(request: Request, services: Services, partial: bool = False) -> Response:
    who = viewer(request, services)
    if who is None:
        return _to_signin(request)
    banner, rows, unanswered = None, [], []
    try:
        pending = await _supervisor(services).pending_approvals()
        rows, unanswered = pending.approvals, pending.unanswered_runs
    except Exception as exc:  # Temporal down or no worker: say so, keep the page up
        banner = f"cannot list approvals now: {' '.join(str(exc).split()) or type(exc).__name__}"
    template = "_inbox.html" if partial else "inbox.html"
    return page(request, template, viewer=who, rows=rows, unanswered=unanswered, banner=banner,
                poll=POLL_SECONDS, now=datetime.now(UTC), title="Approvals")


@router.post("/approvals/{run_id}/{key}", response_class=HTMLResponse)
async def decide_form(
    request: Request,
    services: Services,
    run_id: str,
    key: str,
    action: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    response: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    who = viewer(request, services)
    if who is None:
        return _to_signin(request)
    approval_id = f"{run_id}/{key}"
    if not _csrf_ok(who.csrf, csrf):
        return page(request, "decided.html", 400, viewer=who, ok=False, approval_id=approval_id,
                    message="the form expired: reload the page and decide again", title="Not decided")
    if action not in ("approve", "reject"):
        return page(request, "decided.html", 422, viewer=who, ok=False, approval_id=approval_id,
                    message="choose Approve or Reject", title="Not decided")
    try:
        value = parse_response(response)
        split_approval_id(approval_id)
    except ValueError as exc:
        return page(request, "decided.html", 422, viewer=who, ok=False, approval_id=approval_id,
                    message=str(exc), title="Not decided")
    try:
        supervisor = _supervisor(services)
    except Unavailable as exc:
        return page(request, "decided.html", 503, viewer=who, ok=False, approval_id=approval_id,
                    message=str(exc), title="Not decided")
    outcome = await decide(supervisor, approval_id, approve=action == "approve", by=who.name,
                           reason=reason.strip(), response=value)
    return page(request, "decided.html", outcome.status_code, viewer=who, ok=outcome.ok,
                approval_id=approval_id, run_id=run_id, message=outcome.message,
                title="Decided" if outcome.ok else "Not decided")


# --- runs -----------------------------------------------------------------------------------


@router.get("/runs", response_class=HTMLResponse)
async def runs(request: Request, services: Services, partial: bool = False) -> Response:
    who = viewer(request, services)
    if who is None:
        return _to_signin(request)
    banner, rows, progress = None, [], {}
    try:
        supervisor = _supervisor(services)
        rows = await supervisor.list_runs(limit=100)
        progress = await _progress(supervisor, [r.run_id for r in rows if r.status == "running"][:50])
    except Exception as exc:
        banner = f"cannot list runs now: {' '.join(str(exc).split()) or type(exc).__name__}"
    template = "_runs.html" if partial else "runs.html"
    return page(request, template, viewer=who, rows=rows, progress=progress, banner=banner,
                poll=POLL_SECONDS, now=datetime.now(UTC), title="Runs")


async def _progress(supervisor: Supervisor, run_ids: list[str]) -> dict[str, RunStatus]:
    statuses = await asyncio.gather(
        *(supervisor.get_run(r).status() for r in run_ids), return_exceptions=True
    )
    return {s.run_id: s for s in statuses if isinstance(s, RunStatus)}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, services: Services, run_id: str, partial: bool = False) -> Response:
    who = viewer(request, services)
    if who is None:
        return _to_signin(request)
    template = "_run.html" if partial else "run.html"
    try:
        handle = _supervisor(services).get_run(run_id)
        status = await handle.status()
        events = await handle.events()
    except UnknownRun as exc:
        return page(request, "message.html", 404, viewer=who, title="Unknown run", message=str(exc))
    except Exception as exc:
        return page(request, "message.html", 503, viewer=who, title=run_id, poll=POLL_SECONDS,
                    message=f"cannot read run {run_id} now: {' '.join(str(exc).split())}")
    tail, tail_source = await log_tail(services, status)
    return page(request, template, viewer=who, status=status, attempts=attempts_of(events, status),
                tail=tail, tail_source=tail_source, poll=POLL_SECONDS if not status.state.terminal else 0,
                now=datetime.now(UTC), title=run_id)


# --- signed links -----------------------------------------------------------------------------


async def _approval(supervisor: Supervisor, approval_id: str) -> tuple[ApprovalRecord | None, str | None]:
    """The approval a link names, and the tool's name; (None, None) if the run cannot say now."""
    run_id, key = split_approval_id(approval_id)
    try:
        status = await supervisor.get_run(run_id).status()
    except UnknownRun:
        raise
    except Exception:
        return None, None
    return next((a for a in status.approvals if a.key == key), None), status.tool_name


def _link_refused(request: Request, message: str, status_code: int) -> Response:
    return page(request, "link.html", status_code, claims=None, approval=None, tool_name=None,
                csrf="", message=message, done=False, title="Link refused")


async def _checked_link(
    request: Request, services: HttpServices, token: str
) -> tuple[WebKeys, LinkClaims] | Response:
    keys = web_keys(request, services)
    try:
        claims = keys.signer.verify(token)
        split_approval_id(claims.approval_id)
    except (LinkRefused, ValueError) as exc:
        return _link_refused(request, str(exc), 410 if "expired" in str(exc) else 400)
    if keys.used.is_used(claims.link_id):
        return _link_refused(request, "this link was already used", 410)
    return keys, claims


@router.get("/links/{token}", response_class=HTMLResponse)
async def link_confirm(request: Request, services: Services, token: str) -> Response:
    """Show what the link would do. Changes nothing: mail scanners fetch links."""
    checked = await _checked_link(request, services, token)
    if isinstance(checked, Response):
        return checked
    keys, claims = checked
    try:
        approval, tool_name = await _approval(_supervisor(services), claims.approval_id)
    except UnknownRun:
        return _link_refused(request, f"unknown approval {claims.approval_id}", 404)
    except Unavailable as exc:
        return _link_refused(request, str(exc), 503)
    if approval is not None and approval.state is not ApprovalState.PENDING:
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        return _link_refused(request, f"{claims.approval_id} is already {approval.state.value}{by}", 409)
    return page(request, "link.html", claims=claims, approval=approval, tool_name=tool_name,
                csrf=keys.csrf("link", claims.link_id), message=None, done=False,
                now=datetime.now(UTC), title=f"{claims.action.value.title()} {claims.approval_id}?")


@router.post("/links/{token}", response_class=HTMLResponse)
async def link_decide(
    request: Request,
    services: Services,
    token: str,
    reason: Annotated[str, Form()] = "",
    response: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    checked = await _checked_link(request, services, token)
    if isinstance(checked, Response):
        return checked
    keys, claims = checked
    if not _csrf_ok(keys.csrf("link", claims.link_id), csrf):
        return _link_refused(request, "confirm from the link's own page", 400)
    try:
        value = parse_response(response) if claims.action is LinkAction.APPROVE else None
        supervisor = _supervisor(services)
    except (ValueError, Unavailable) as exc:
        return _link_refused(request, str(exc), 422 if isinstance(exc, ValueError) else 503)
    try:
        keys.used.claim(claims)
    except LinkRefused as exc:
        return _link_refused(request, str(exc), 410)
    try:
        outcome = await decide(supervisor, claims.approval_id, approve=claims.action is LinkAction.APPROVE,
                               by=claims.approver, reason=reason.strip(), response=value)
    except BaseException:
        keys.used.release(claims.link_id)
        raise
    if outcome.status_code == 503:  # nothing was decided: the link may be used again
        keys.used.release(claims.link_id)
    return page(request, "link.html", outcome.status_code, claims=claims, approval=None,
                tool_name=None, csrf="", message=outcome.message, done=outcome.ok,
                title="Decided" if outcome.ok else "Not decided")


# --- static files ---------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("toolwarden.http").joinpath("static", name).read_bytes()
    response = Response(body, media_type=_STATIC[name])
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
