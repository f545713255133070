"""`HOST:PORT` addresses of the worker's HTTP server, as settings and `--address` spell them."""

from __future__ import annotations


def parse_address(address: str) -> tuple[str, int]:
    """Split `HOST:PORT` (`[v6]:PORT` for IPv6; an empty host means every interface)."""
    text = address.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    bare_v6 = ":" in host and not text.startswith("[")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or bare_v6:
        raise ValueError(f"invalid address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, int(port)


def client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host: str, port: int) -> str:
    """`http://HOST:PORT` for a client of a server bound to `host`."""
    host = client_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def http_url(address: str, path: str) -> str:
    """The URL of `path` on the server at `address` (`HOST:PORT`); ValueError if malformed."""
    return base_url(*parse_address(address)) + path
