"""Asks N approvals at once, each blocking in its own thread: `many_asks.py N`.

Prints one line per answer and exits 0 only if every one was approved.
"""

import sys
import threading

from toolwarden.tool import ApprovalError, request_approval

count = int(sys.argv[1])
answers: dict[int, object] = {}


def ask(i: int) -> None:
    try:
        answers[i] = request_approval(f"step-{i}", f"Step {i}?").approved
    except ApprovalError as exc:
        answers[i] = f"ERROR {exc.code} {exc.message}"
    print(f"step-{i} {answers[i]}", flush=True)


threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.exit(0 if all(answer is True for answer in answers.values()) else 1)
