"""Prints N bytes fast: `chatty.py BYTES`."""

import sys

total = int(sys.argv[1])
line = b"x" * 1023 + b"\n"
out = sys.stdout.buffer
written = 0
while written < total:
    out.write(line)
    written += len(line)
out.flush()
