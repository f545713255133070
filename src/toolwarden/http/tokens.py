"""Bearer tokens that name an approver: `toolwarden token create alice` prints one.

Only a SHA-256 hash of each token is kept. The tokens are 256-bit random strings, so a plain
hash is enough (a slow password hash buys nothing against a guess space of 2**256). The file is
JSON, mode 0600, rewritten atomically under a lock, and re-read by the worker whenever it
changes, so `token revoke` takes effect on the next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, Field, ValidationError

TOKEN_PREFIX = "tw_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class TokenError(Exception):
    """A token operation that cannot be done; the message is one line."""


class TokenRecord(BaseModel):
    """One issued token, as stored: the approver's name and the token's hash, never the token."""

    name: str
    token_sha256: str
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class TokenFile(BaseModel):
    tokens: list[TokenRecord] = Field(default_factory=list)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TokenStore:
    """The approvers' tokens in one file (`Settings.tokens_file`)."""

    def __init__(self, path: Path, *, now: Callable[[], datetime] = _utc_now) -> None:
        self.path = path
        self._now = now
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._by_hash: dict[str, TokenRecord] = {}

    # -- what the server asks ---------------------------------------------------------------

    def verify(self, token: str) -> str | None:
        """The approver's name if `token` is issued, unrevoked and unexpired, else None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        record = self._current().get(token_hash(token))
        if record is None or record.expired(self._now()):
            return None
        return record.name

    # -- what the CLI does ------------------------------------------------------------------

    def create(self, name: str, expires: timedelta | None = None) -> str:
        """Issue a new token for `name` (other tokens of `name` stay valid); return it."""
        if not _NAME.match(name):
            raise TokenError(
                f"invalid approver name {name!r}: use letters, digits and . _ @ + - "
                "(at most 128 characters)"
            )
        if expires is not None and expires <= timedelta(0):
            raise TokenError("--expires must be a positive duration, e.g. 90d")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        record = TokenRecord(
            name=name,
            token_sha256=token_hash(token),
            created_at=now,
            expires_at=now + expires if expires is not None else None,
        )
        with self._locked():
            stored = self._read()
            stored.tokens.append(record)
            self._write(stored)
        return token

    def list(self) -> list[TokenRecord]:
        return list(self._read().tokens)

    def revoke(self, name: str) -> int:
        """Revoke every token of `name`; return how many there were."""
        with self._locked():
            stored = self._read()
            kept = [t for t in stored.tokens if t.name != name]
            revoked = len(stored.tokens) - len(kept)
            if revoked:
                self._write(TokenFile(tokens=kept))
        return revoked

    # -- the file ---------------------------------------------------------------------------

    def _current(self) -> dict[str, TokenRecord]:
        """The tokens by hash, re-read when the file changed (each write is a new inode)."""
        try:
            st = self.path.stat()
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        with self._lock:
            if seen != self._seen or seen is None:
                try:
                    stored = self._read()
                except TokenError:
                    stored = TokenFile()  # an unreadable file authenticates nobody
                self._by_hash = {t.token_sha256: t for t in stored.tokens}
                self._seen = seen
            return self._by_hash

    def _read(self) -> TokenFile:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return TokenFile()
        except OSError as exc:
            raise TokenError(f"cannot read the token file {self.path}: {exc.strerror}") from exc
        try:
            return TokenFile.model_validate_json(text)
        except ValidationError as exc:
            raise TokenError(f"the token file {self.path} is not valid: {exc.error_count()} "
                             "errors; fix or remove it") from exc

    def _write(self, stored: TokenFile) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(stored.model_dump_json(indent=2))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize writers across processes (two `token create`s never lose one)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock_fd = os.open(self.path.with_name(self.path.name + ".lock"),
                              os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TokenError(f"cannot write the token file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock_fd)
