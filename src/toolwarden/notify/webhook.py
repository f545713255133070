"""Generic webhook: the `Notice` as a JSON POST, signed with HMAC-SHA256.

Headers of every POST:

* `X-Toolwarden-Event`: the notice's event (`approval.requested`, ...);
* `X-Toolwarden-Delivery`: its delivery id, the same on every retry (drop ones seen before);
* `X-Toolwarden-Timestamp`: Unix seconds when this attempt was signed;
* `X-Toolwarden-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the shared secret,
  of the timestamp, a `.`, and the raw body bytes.

A receiver recomputes the HMAC over exactly the bytes it received (`verify_signature` below is
the reference), compares in constant time, and refuses a timestamp more than five minutes
away from its clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import httpx

from toolwarden.notify.message import Notice

SIGNATURE_HEADER = "X-Toolwarden-Signature"
TIMESTAMP_HEADER = "X-Toolwarden-Timestamp"
DELIVERY_HEADER = "X-Toolwarden-Delivery"
EVENT_HEADER = "X-Toolwarden-Event"
REPLAY_TOLERANCE_S = 300


def read_secret(secret: str | None, secret_file: Path | None) -> bytes:
    if secret_file is not None:
        value = secret_file.read_text().strip()
    elif secret:
        value = secret
    else:
        raise ValueError("a webhook needs a secret or a secret_file to sign its requests")
    if not value:
        raise ValueError(f"webhook secret file {secret_file} is empty")
    return value.encode()


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: float | None = None,
    tolerance_s: float = REPLAY_TOLERANCE_S,
) -> bool:
    """True if `signature_header` signs `timestamp` + `body` and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header)


class WebhookDelivery:
    channel = "webhook"

    def __init__(self, url: str, secret: bytes, notice: Notice) -> None:
        self.url = url
        self._secret = secret
        self._body = notice.model_dump_json().encode()
        self._notice = notice
        self.description = f"{notice.event.value} {notice.approval_id} to webhook {url}"

    def send(self, http: httpx.Client) -> None:
        timestamp = str(int(time.time()))
        response = http.post(
            self.url,
            content=self._body,
            headers={
                "Content-Type": "application/json",
                EVENT_HEADER: self._notice.event.value,
                DELIVERY_HEADER: self._notice.delivery_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(self._secret, timestamp, self._body),
            },
        )
        response.raise_for_status()
