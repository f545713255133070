"""A hung tool that will not go quietly: ignores SIGTERM, as do the two grandchildren it forks.

Prints its grandchildren's pids, then goes silent forever; only SIGKILL of the group ends it.
"""

import signal
import subprocess
import sys
import time

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"

signal.signal(signal.SIGTERM, signal.SIG_IGN)
children = [subprocess.Popen([sys.executable, "-c", STUBBORN]) for _ in range(2)]
print("GRANDCHILDREN", *(child.pid for child in children), flush=True)
while True:
    time.sleep(3600)
