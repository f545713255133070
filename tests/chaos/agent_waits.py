#!/usr/bin/env python3
"""A stand-in agent for hook fuzzing: takes any argv (the adapter adds `--settings ...`),
prints a line, then waits silently until the file named by $GATE exists, and exits 0."""

import os
import sys
import time
from pathlib import Path

print("agent waiting", " ".join(sys.argv[1:2]), flush=True)
gate = Path(os.environ["GATE"])
while not gate.exists():
    time.sleep(0.05)
print("agent done", flush=True)
