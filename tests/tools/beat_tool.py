#!/usr/bin/env python3
"""A silent tool that heartbeats with progress for N seconds (argv[1], default 5), then exits 0.

It never prints: it proves that a tool which heartbeats is alive even without output.
"""

from __future__ import annotations

import sys
import time

from toolwarden.tool import heartbeat


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        heartbeat(progress=min(elapsed / seconds, 1.0), message=f"{elapsed:.1f}s of {seconds:g}s")
        time.sleep(0.05)
    heartbeat(progress=1.0, message="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
