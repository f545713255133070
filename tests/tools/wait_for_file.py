"""Prints a line, then waits (silently) until the file named by argv[1] exists."""

import sys
import time
from pathlib import Path

print("first line", flush=True)
gate = Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.05)
print("second line", flush=True)
