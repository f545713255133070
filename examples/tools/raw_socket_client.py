#!/usr/bin/env python3
"""The protocol by hand, with nothing but a Unix socket and JSON (no toolwarden import).

A template for tools in any language: connect to $TOOLWARDEN_SOCKET, write one JSON object per
line, read replies line by line. See specs/approval-protocol-v1.md.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def main() -> int:
    path = os.environ.get("TOOLWARDEN_SOCKET")
    if not path:
        print("not supervised", file=sys.stderr)
        return 4
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    replies = sock.makefile("r", encoding="utf-8")

    def send(message: dict[str, object]) -> None:
        sock.sendall(json.dumps({"v": 1, **message}).encode() + b"\n")

    send({"type": "hello", "tool": "raw-example", "pid": os.getpid()})
    welcome = json.loads(replies.readline())
    print("welcome:", welcome)

    send({"type": "heartbeat", "progress": 0.5, "message": "halfway"})
    send(
        {
            "type": "approval_request",
            "id": "req-1",
            "key": "raw-example",
            "summary": "Proceed with the raw example?",
            "details": {"note": "sent by hand"},
            "timeout": 600,
            "on_expiry": "reject",
        }
    )
    for line in replies:
        reply = json.loads(line)
        if reply.get("id") != "req-1":
            continue
        if reply["type"] == "pending":
            print("pending as", reply["approval_id"], "until", reply["expires_at"])
        elif reply["type"] == "decision":
            print("decision:", json.dumps(reply))
            return 0 if reply["approved"] else 1
        elif reply["type"] == "error":
            print("error:", reply["code"], reply["message"], file=sys.stderr)
            return 4
    print("supervisor went away", file=sys.stderr)
    return 4


if __name__ == "__main__":
    sys.exit(main())
