"""Signed decision links: one approval, one action, one approver, until the approval expires.

A link is `{base_url}/links/{token}`, the token being `PAYLOAD.MAC` (both base64url): the
payload names a random link id, the approval, the action, the approver it was issued to and its
expiry (the approval's), and the MAC is HMAC-SHA256 over the payload with a key that never
leaves the worker hosts (`{home}/link-signing.key`, created 0600 on first use, or
`notifications.link_key_file`). Whoever holds the link acts as that approver, for that one
action, once: so links go only to channels an operator trusts with that power (a person's mail,
a private Slack channel).

Verifying changes nothing (a GET shows a confirmation page, because mail scanners fetch links);
the page's POST claims the link id in `UsedLinks` before deciding, so a second use is refused
even if it races the first. Across hosts, a link used on one worker and replayed on another is
refused by the decision itself: the approval is no longer pending.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ValidationError

from toolwarden.models import ApprovalRecord
from toolwarden.notify.message import NoticeLinks

KEY_BYTES = 32
_TOKEN_VERSION = 1


class LinkAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class LinkClaims(BaseModel):
    """What a verified link says: who may do what to which approval, until when."""

    link_id: str
    approval_id: str
    action: LinkAction
    approver: str
    expires_at: datetime


class LinkRefused(Exception):
    """A link that cannot be used (malformed, tampered, expired or used); the str is one line."""


def load_or_create_key(path: Path) -> bytes:
    """The signing key at `path`, written (0600, never overwritten) on first use."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process on this host wrote it first: use that one
            key = path.read_bytes()
        else:
            key = secrets.token_bytes(KEY_BYTES)
            with os.fdopen(fd, "wb") as file:
                file.write(key)
            return key
    if len(key) < 16:
        raise ValueError(f"link signing key {path} is too short ({len(key)} bytes; need 16 or more)")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Issues and verifies decision links with one key."""

    def __init__(self, key: bytes, base_url: str) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(
        self, approval_id: str, action: LinkAction, approver: str, expires_at: datetime
    ) -> str:
        """A new token; each call gets its own link id."""
        payload = json.dumps(
            {
                "v": _TOKEN_VERSION,
                "id": secrets.token_urlsafe(12),
                "a": approval_id,
                "x": action.value,
                "by": approver,
                "exp": int(expires_at.timestamp()),
            },
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def url(self, token: str) -> str:
        return f"{self.base_url}/links/{token}"

    def link(self, approval_id: str, action: LinkAction, approver: str, expires_at: datetime) -> str:
        return self.url(self.issue(approval_id, action, approver, expires_at))

    def page_url(self, run_id: str) -> str:
        return f"{self.base_url}/runs/{run_id}"

    def notice_links(self, approval: ApprovalRecord, approver: str | None) -> NoticeLinks:
        """The links a notification carries: decision links only when issued to an approver."""
        page = self.page_url(approval.run_id)
        if approver is None:
            return NoticeLinks(page=page)
        return NoticeLinks(
            page=page,
            approve=self.link(approval.approval_id, LinkAction.APPROVE, approver, approval.expires_at),
            reject=self.link(approval.approval_id, LinkAction.REJECT, approver, approval.expires_at),
        )

    def verify(self, token: str, now: datetime | None = None) -> LinkClaims:
        """The link's claims if its signature holds and it has not expired; else `LinkRefused`."""
        encoded_payload, dot, encoded_mac = token.partition(".")
        try:
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        except (binascii.Error, ValueError) as exc:
            raise LinkRefused("malformed link") from exc
        if not dot or not hmac.compare_digest(mac, self._mac(payload)):
            raise LinkRefused("this link's signature does not match: it was altered or not issued here")
        try:
            raw = json.loads(payload)
            claims = LinkClaims(
                link_id=raw["id"],
                approval_id=raw["a"],
                action=raw["x"],
                approver=raw["by"],
                expires_at=datetime.fromtimestamp(raw["exp"], UTC),
            )
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise LinkRefused("malformed link") from exc
        if (now or datetime.now(UTC)) >= claims.expires_at:
            raise LinkRefused(f"this link expired at {claims.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        return claims


class UsedLinks:
    """Link ids already used, in a small file so a restart forgets none.

    One line per link, `ID EXPIRY`; lines of expired links are dropped on the next rewrite, since
    an expired link is refused anyway. An exclusive `flock` makes a claim atomic between the
    processes of one host, a thread lock between the threads of one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+") as file:
                fcntl.flock(file, fcntl.LOCK_EX)
                used: dict[str, int] = {}
                for line in file.read().splitlines():
                    link_id, _, expiry = line.partition(" ")
                    if link_id and expiry.isdigit():
                        used[link_id] = int(expiry)
                before = dict(used)
                yield used
                if used != before:
                    now = int(time.time())
                    file.seek(0)
                    file.truncate()
                    file.writelines(f"{i} {e}\n" for i, e in used.items() if e > now)
                    file.flush()
                    os.fsync(file.fileno())

    def is_used(self, link_id: str) -> bool:
        with self._locked() as used:
            return link_id in used

    def claim(self, claims: LinkClaims) -> None:
        """Mark the link used, or raise `LinkRefused` if it already was."""
        with self._locked() as used:
            if claims.link_id in used:
                raise LinkRefused("this link was already used")
            used[claims.link_id] = int(claims.expires_at.timestamp())

    def release(self, link_id: str) -> None:
        """Give a claimed link back: its decision could not be delivered, so it may be retried."""
        with self._locked() as used:
            used.pop(link_id, None)
