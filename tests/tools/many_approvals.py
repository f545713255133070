#!/usr/bin/env python3
"""A real tool that asks many approvals over many attempts, holding one over each retry.

Usage: many_approvals.py ATTEMPTS PER_ATTEMPT

Attempt N (from $TOOLWARDEN_ATTEMPT) first waits on `held-(N-1)`, the approval the previous
attempt asked and left pending, and appends `held-(N-1) <outcome>` to ./held.log. It then asks
PER_ATTEMPT approvals `aN-i` at once, then waits on each. Before the last attempt it asks
`held-N` without waiting and exits 1, so the run retries with that approval still pending.
"""

from __future__ import annotations

import os
import sys

from toolwarden.protocol import ENV_ATTEMPT
from toolwarden.tool import request_approval, submit_approval


def main() -> int:
    attempts, per_attempt = int(sys.argv[1]), int(sys.argv[2])
    attempt = int(os.environ[ENV_ATTEMPT])
    if attempt > 1:
        held = request_approval(f"held-{attempt - 1}", "held over a retry")
        with open("held.log", "a") as log:
            log.write(f"held-{attempt - 1} {held.outcome}\n")
    # Ask them all first, then wait on each: a person sees the attempt's whole batch at once.
    keys = [f"a{attempt}-{i}" for i in range(per_attempt)]
    for i, key in enumerate(keys):
        submit_approval(key, f"step {i} of attempt {attempt}")
    for key in keys:
        request_approval(key, "asked above")
    if attempt < attempts:
        submit_approval(f"held-{attempt}", "held over a retry")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
