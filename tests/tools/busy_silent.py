"""Uses a CPU for argv[1] seconds without printing anything (a silent compiler), then exits 0."""

import sys
import time

deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    pass
