#!/usr/bin/env python3
"""A real tool that asks for approval through `toolwarden.tool`.

Usage: approval_tool.py KEY SUMMARY [--or-exit] [--timeout S] [--on-expiry approve|reject]
                        [--details JSON]

Prints "asking KEY", asks (blocking, or exit-and-relaunch with --or-exit), then prints one line
`DECISION <json>` and exits 0 if approved, 1 otherwise. Errors print `ERROR <code> <message>`
and exit 4.
"""

from __future__ import annotations

import argparse
import json
import sys

from toolwarden.tool import ApprovalError, request_approval, request_approval_or_exit


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("key")
    parser.add_argument("summary")
    parser.add_argument("--or-exit", action="store_true")
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--on-expiry", choices=["approve", "reject"], default=None)
    parser.add_argument("--details", default=None)
    args = parser.parse_args()
    details = None if args.details is None else json.loads(args.details)
    print(f"asking {args.key}", flush=True)
    ask = request_approval_or_exit if args.or_exit else request_approval
    try:
        decision = ask(args.key, args.summary, details, args.timeout, args.on_expiry)
    except ApprovalError as exc:
        print(f"ERROR {exc.code} {exc.message}", flush=True)
        return 4
    print(f"DECISION {json.dumps(decision.to_json())}", flush=True)
    return 0 if decision.approved else 1


if __name__ == "__main__":
    sys.exit(main())
