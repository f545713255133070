#!/usr/bin/env python3
"""A supervised tool for bench/approvals.py: asks, and stamps the instant it holds the decision.

Usage: stamp_approval_tool.py KEY STAMP_FILE

Calls `toolwarden.tool.request_approval(KEY, ...)`; the moment it returns, writes
`<time.time()> <outcome>` to STAMP_FILE (written to a temp name, then renamed, so a reader never
sees half a line) and exits 0 if approved, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import time

from toolwarden.tool import request_approval


def main() -> int:
    key, stamp_file = sys.argv[1], sys.argv[2]
    decision = request_approval(key, "bench: approve me")
    held = time.time()
    partial = f"{stamp_file}.part"
    with open(partial, "w") as out:
        out.write(f"{held!r} {decision.outcome}\n")
    os.replace(partial, stamp_file)
    return 0 if decision.approved else 1


if __name__ == "__main__":
    sys.exit(main())
