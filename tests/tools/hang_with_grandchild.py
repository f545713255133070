"""Prints its pid and its grandchild's pid, then hangs silently (grandchild sleeps too)."""

import subprocess
import sys
import time

child = subprocess.Popen(["sleep", "3600"])
print(f"PID {child.pid}", flush=True)
print("READY", flush=True)
time.sleep(3600)
sys.exit(0)
