#!/usr/bin/env python3
"""Exit-and-relaunch approval: no process waits while a person takes days to decide.

The first launch asks, waits until the request is recorded, and exits with status 75. The
supervisor waits for the decision with nothing running, then relaunches this script with the
decision in $TOOLWARDEN_RESUME, where the same call returns it at once. Everything before the
call therefore runs again on relaunch: keep it idempotent (or skip it when resuming).

    toolwarden run -- .venv/bin/python examples/tools/python_exit_and_resume.py
    toolwarden reject RUN/delete-old-backups --reason "keep them until the audit"
"""

from __future__ import annotations

import sys

from toolwarden.tool import heartbeat, request_approval_or_exit, resume_decisions


def main() -> int:
    if "delete-old-backups" not in resume_decisions():
        heartbeat(message="listing backups")  # first launch only
    decision = request_approval_or_exit(
        "delete-old-backups",
        "Delete 14 backups older than 90 days?",
        details={"count": 14, "oldest": "2023-01-04"},
        timeout=7 * 86400,
    )
    # Only reached once the decision is known (possibly in a later launch).
    if decision.approved:
        print("deleting backups")
    else:
        print(f"keeping backups: {decision.outcome}: {decision.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
