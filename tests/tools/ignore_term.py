"""Ignores SIGTERM, so only SIGKILL after the grace period stops it."""

import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("READY", flush=True)
while True:
    time.sleep(1)
