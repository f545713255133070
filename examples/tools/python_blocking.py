#!/usr/bin/env python3
"""Blocking approval: the tool stays alive, heartbeating, until a person decides.

toolwarden run -- .venv/bin/python examples/tools/python_blocking.py
toolwarden approvals                     # shows RUN/apply-patch
toolwarden approve RUN/apply-patch --response '{"message": "ship it"}'
"""

from __future__ import annotations

import hashlib
import sys

from toolwarden.tool import heartbeat, request_approval


def main() -> int:
    chunks = [bytes([n]) * 4096 for n in range(200)]
    for n, chunk in enumerate(chunks, 1):
        hashlib.sha256(chunk).digest()  # the real work
        heartbeat(progress=n / len(chunks) / 2, message=f"analysed {n}/{len(chunks)} chunks")

    decision = request_approval(
        "apply-patch",
        "Apply the generated patch to 3 files?",
        details={"files": ["a.py", "b.py", "c.py"], "lines_changed": 42},
        timeout=3600,  # seconds; nobody answers within an hour -> on_expiry applies
        on_expiry="reject",
    )
    if not decision.approved:
        print(f"not applying: {decision.outcome} by {decision.by}: {decision.reason}")
        return 1
    print(f"applying, approved by {decision.by}; response: {decision.response}")
    heartbeat(progress=1.0, message="patch applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
