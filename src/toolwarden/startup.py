"""The collector pause of a short-lived command's start-up (`toolwarden approve`, the TUI).

Importing click, pydantic and temporalio creates ~95k tracked objects and frees almost none,
so the collections they trigger find no garbage. Measured on the 2-core CI machine (thread CPU
time of the imports of `toolwarden approve`, gc callbacks): 134 collections costing 48-67 ms of
a 470-540 ms start without the pause, none with it; `--help` alone spends ~5 ms. The command
ends the pause once the heavy imports are done, freezing what they made out of later scans.
"""

from __future__ import annotations

import gc


def begin_startup_gc_pause() -> None:
    gc.disable()


def end_startup_gc_pause() -> None:
    """Turn the collector back on, with the start-up objects frozen out of its scans."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
