#!/usr/bin/env python3
"""A real exit-and-relaunch tool that lingers: the decision can arrive before it exits.

Usage: exit_after_pending.py KEY GO_FILE

First launch: submits KEY, waits for GO_FILE to exist, then exits 75 to be relaunched.
Relaunched with the decision: prints `DECISION <json>` and exits 0 if approved, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from toolwarden.tool import EXIT_AWAIT_DECISION, resume_decisions, submit_approval


def main(key: str, go: Path) -> int:
    decision = resume_decisions().get(key)
    if decision is None:
        submit_approval(key, "Decide before I exit")
        while not go.exists():
            time.sleep(0.02)
        return EXIT_AWAIT_DECISION
    print(f"DECISION {json.dumps(decision.to_json())}", flush=True)
    return 0 if decision.approved else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
