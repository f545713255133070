"""Signed decision links: issue, verify, tamper, expire, use once (the page's POST is tested in
tests/http/test_web_links.py against a real worker)."""

from __future__ import annotations

import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from toolwarden.http.links import LinkAction, LinkRefused, LinkSigner, UsedLinks, load_or_create_key

SOON = datetime.now(UTC) + timedelta(hours=1)


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "home" / "link-signing.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="too short"):
        load_or_create_key(path)


def test_a_link_carries_its_approval_action_approver_and_expiry() -> None:
    signer = LinkSigner(b"k" * 32, "http://web.example/")
    url = signer.link("run-1/deploy", LinkAction.APPROVE, "alice", SOON)
    assert url.startswith("http://web.example/links/")
    claims = signer.verify(url.rsplit("/", 1)[1])
    assert (claims.approval_id, claims.action, claims.approver) == ("run-1/deploy", "approve", "alice")
    assert claims.expires_at == SOON.replace(microsecond=0)
    other = signer.issue("run-1/deploy", LinkAction.APPROVE, "alice", SOON)
    assert signer.verify(other).link_id != claims.link_id


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the MAC
        lambda t: "e" + t[1:] if t[0] != "e" else "f" + t[1:],  # the payload
        lambda t: t.replace(".", ""),
        lambda t: "not a token",
        lambda t: "%%%.%%%",
    ],
)
def test_a_tampered_link_is_refused(tamper: object) -> None:
    signer = LinkSigner(b"k" * 32, "http://x")
    token = signer.issue("run-1/deploy", LinkAction.REJECT, "alice", SOON)
    assert callable(tamper)
    with pytest.raises(LinkRefused):
        signer.verify(tamper(token))


def test_a_link_signed_with_another_key_is_refused() -> None:
    token = LinkSigner(b"a" * 32, "http://x").issue("r/k", LinkAction.APPROVE, "alice", SOON)
    with pytest.raises(LinkRefused, match="signature"):
        LinkSigner(b"b" * 32, "http://x").verify(token)


def test_a_forged_approver_breaks_the_signature() -> None:
    import base64
    import json

    signer = LinkSigner(b"k" * 32, "http://x")
    payload, mac = signer.issue("r/k", LinkAction.APPROVE, "alice", SOON).split(".")
    raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw["by"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()
    with pytest.raises(LinkRefused, match="signature"):
        signer.verify(f"{forged}.{mac}")


def test_an_expired_link_is_refused() -> None:
    signer = LinkSigner(b"k" * 32, "http://x")
    token = signer.issue("r/k", LinkAction.APPROVE, "alice", SOON)
    with pytest.raises(LinkRefused, match="expired"):
        signer.verify(token, now=SOON + timedelta(seconds=1))


def test_a_link_is_used_once_even_across_instances_and_threads(tmp_path: Path) -> None:
    signer = LinkSigner(b"k" * 32, "http://x")
    claims = signer.verify(signer.issue("r/k", LinkAction.APPROVE, "alice", SOON))
    path = tmp_path / "used-links"
    results: list[str] = []

    def use() -> None:
        try:
            UsedLinks(path).claim(claims)
            results.append("ok")
        except LinkRefused:
            results.append("refused")

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok"] + ["refused"] * 7
    assert UsedLinks(path).is_used(claims.link_id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_released_link_can_be_claimed_again_and_expired_ids_are_pruned(tmp_path: Path) -> None:
    signer = LinkSigner(b"k" * 32, "http://x")
    used = UsedLinks(tmp_path / "used-links")
    live = signer.verify(signer.issue("r/k", LinkAction.APPROVE, "alice", SOON))
    old = signer.verify(signer.issue("r/j", LinkAction.APPROVE, "alice", SOON))
    used.claim(live)
    used.release(live.link_id)
    used.claim(live)
    used.claim(old.model_copy(update={"expires_at": datetime.now(UTC) - timedelta(seconds=5)}))
    lines = (tmp_path / "used-links").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [live.link_id]
