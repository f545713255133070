"""Where a run's side effects go: the mirror, metrics and notifiers, behind one small protocol.

The activities hand every change of a run to each sink. A sink must return at once (queue the
work and do it on its own thread or task) and must never raise into the run: `RunSinks` logs
and drops a sink's exception, so a broken dashboard or webhook never fails or slows a tool.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from toolwarden.models import LiveDetails, RunUpdate

log = logging.getLogger(__name__)


class RunSink(Protocol):
    """One consumer of run changes. Both calls come from the worker's event loop."""

    def run_changed(self, update: RunUpdate) -> None:
        """The run as it is now and the events recorded since the last call."""

    def heartbeat(self, run_id: str, live: LiveDetails) -> None:
        """What a live tool is doing, about once per heartbeat interval."""


class RunSinks:
    """Fan-out to every sink; a failing sink is logged and skipped, never raised."""

    def __init__(self, sinks: Iterable[RunSink] = ()) -> None:
        self._sinks = list(sinks)

    def add(self, sink: RunSink) -> None:
        self._sinks.append(sink)

    def run_changed(self, update: RunUpdate) -> None:
        for sink in self._sinks:
            try:
                sink.run_changed(update)
            except Exception:
                log.exception("run sink %s failed on run %s", type(sink).__name__, update.status.run_id)

    def heartbeat(self, run_id: str, live: LiveDetails) -> None:
        for sink in self._sinks:
            try:
                sink.heartbeat(run_id, live)
            except Exception:
                log.exception("run sink %s failed on a heartbeat of run %s", type(sink).__name__, run_id)
