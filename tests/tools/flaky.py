"""Fails until the counter file records N attempts: `flaky.py COUNTER N`."""

import sys
from pathlib import Path

counter = Path(sys.argv[1])
needed = int(sys.argv[2])
count = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(count))
print(f"attempt {count}", flush=True)
sys.exit(0 if count >= needed else 3)
