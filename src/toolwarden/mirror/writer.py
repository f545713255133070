"""The background writer: the only way the worker touches the mirror database.

`submit` and `heartbeat` only put the item in memory under a short lock and return; a daemon
thread drains it in batches. Snapshots are coalesced per run (the newest wins, events are kept
and deduplicated by sequence), heartbeats are throttled per run (the last value wins), and when
the database is down, locked or slow the thread retries with exponential backoff and catches up
once it answers. Nothing here ever raises into, blocks or slows a tool run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import Engine

from toolwarden.config import MirrorSettings
from toolwarden.mirror.engine import make_engine, redact
from toolwarden.models import LiveDetails, RunEvent, RunStatus, RunUpdate

log = logging.getLogger(__name__)

MAX_RUNS_PER_BATCH = 500
# Heartbeats per batch: snapshots are taken first, and due heartbeats beyond this wait for the
# next batch (taken at once), so a heartbeat burst never delays state changes by much.
MAX_BEATS_PER_BATCH = 250
# Once the first item is due, the writer waits this long to gather more before it writes: the
# snapshots of concurrent runs then share one transaction instead of paying one each.
BATCH_LINGER_SECONDS = 0.075
# A run's next heartbeat write is due one interval after the *arrival* of the one written last,
# less this fraction, so heartbeats arriving once per interval are each written (no drift).
BEAT_SLACK = 0.1
_MAX_REMEMBERED = 100_000
_BUSY = float("-inf")  # `_wake_at` while the thread is writing: it looks again before it waits


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


class MirrorStats(BaseModel):
    """What `db status` and the worker's /readyz report about the writer."""

    connected: bool
    backlog: int
    lag_seconds: float | None
    written_total: int
    last_error: str | None
    last_write_at: datetime | None
    events_written_total: int = 0
    heartbeats_written_total: int = 0
    dropped_events_total: int = 0
    failures_total: int = 0


@dataclass
class _PendingRun:
    status: RunStatus
    since: float  # monotonic time of the oldest unwritten snapshot or event
    events: dict[int, RunEvent] = field(default_factory=dict)

    def size(self) -> int:
        return 1 + len(self.events)


@dataclass
class _PendingBeat:
    live: LiveDetails
    received: float  # monotonic arrival of `live` (the throttle is anchored to it once written)
    since: float  # arrival of the oldest heartbeat it replaced: a stream cannot postpone it


@dataclass
class _Batch:
    runs: dict[str, _PendingRun]
    beats: dict[str, _PendingBeat]

    def empty(self) -> bool:
        return not self.runs and not self.beats


class MirrorWriter:
    """Writes run snapshots, events and throttled heartbeats to the mirror in the background."""

    def __init__(
        self,
        url: str,
        settings: MirrorSettings,
        *,
        upgrade_schema: bool = True,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        busy_timeout_ms: int = 2000,
    ) -> None:
        self.url = url
        self.settings = settings
        self._upgrade_schema = upgrade_schema
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._busy_timeout_ms = busy_timeout_ms
        self._interval = settings.heartbeat_write_interval.total_seconds()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._runs: dict[str, _PendingRun] = {}
        self._beats: dict[str, _PendingBeat] = {}
        self._beat_written: dict[str, float] = {}
        self._finished: dict[str, float] = {}  # runs seen terminal: later heartbeats are late
        self._size = 0
        self._inflight = 0  # items taken by the thread and not yet committed
        self._inflight_since: float | None = None
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        # When the waiting thread will look again (None: only when woken; _BUSY: not waiting).
        # Producers wake it only for items due earlier, not on every heartbeat.
        self._wake_at: float | None = _BUSY
        self._engine: Engine | None = None
        self._schema_checked = not upgrade_schema
        # Stats, guarded by the lock.
        self._connected = False
        self._written = 0
        self._events_written = 0
        self._beats_written = 0
        self._dropped = 0
        self._failures = 0
        self._last_error: str | None = None  # the database's, cleared by the next success
        self._drop_note: str | None = None  # shed events: stays, a rebuild restores them
        self._last_write_at: datetime | None = None

    # -- public API ------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="toolwarden-mirror", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what can be written within `timeout` seconds, then stop the thread."""
        with self._lock:
            thread = self._thread
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout + 1.0)
        with self._lock:
            self._thread = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def submit(self, update: RunUpdate) -> None:
        """Queue a run snapshot and its new events; never blocks, never raises."""
        try:
            now = time.monotonic()
            run_id = update.status.run_id
            with self._lock:
                pending = self._runs.get(run_id)
                before = 0
                if pending is None:
                    pending = self._runs[run_id] = _PendingRun(status=update.status, since=now)
                else:
                    before = pending.size()
                    if update.status.updated_at >= pending.status.updated_at:
                        pending.status = update.status
                for event in update.events:
                    pending.events[event.seq] = event
                self._size += pending.size() - before
                if update.status.state.terminal:
                    self._finished[run_id] = now
                    self._drop_beat(run_id)
                    if len(self._finished) > _MAX_REMEMBERED:
                        for old in list(self._finished)[: _MAX_REMEMBERED // 2]:
                            del self._finished[old]
                self._enforce_backlog()
                ready = now if len(self._runs) >= MAX_RUNS_PER_BATCH else now + BATCH_LINGER_SECONDS
                self._notify_if_sooner(ready)
        except Exception:  # the mirror never fails a run
            log.exception("mirror: could not queue an update")

    def heartbeat(self, run_id: str, live: LiveDetails) -> None:
        """Record a heartbeat; written at most once per interval per run, last value wins."""
        try:
            now = time.monotonic()
            if live.last_heartbeat_at is None:
                live = live.model_copy(update={"last_heartbeat_at": datetime.now(UTC)})
            with self._lock:
                if run_id in self._finished:
                    return
                queued = self._beats.get(run_id)
                if queued is None:
                    self._size += 1
                since = now if queued is None else queued.since
                self._beats[run_id] = _PendingBeat(live=live, received=now, since=since)
                self._enforce_backlog()
                self._notify_if_sooner(max(since, self._beat_due(run_id)) + BATCH_LINGER_SECONDS)
                if len(self._beat_written) > _MAX_REMEMBERED:
                    stale = now - 100 * self._interval
                    for key in [k for k, t in self._beat_written.items() if t < stale]:
                        del self._beat_written[key]
        except Exception:
            log.exception("mirror: could not queue a heartbeat")

    def stats(self) -> MirrorStats:
        with self._lock:
            now = time.monotonic()
            oldest: float | None = self._inflight_since
            for pending in self._runs.values():
                oldest = pending.since if oldest is None else min(oldest, pending.since)
            for run_id, beat in self._beats.items():
                due = max(beat.since, self._beat_due(run_id))
                if due <= now:
                    oldest = due if oldest is None else min(oldest, due)
            return MirrorStats(
                connected=self._connected,
                backlog=self._size + self._inflight,
                lag_seconds=None if oldest is None else max(now - oldest, 0.0),
                written_total=self._written,
                last_error=self._last_error or self._drop_note,
                last_write_at=self._last_write_at,
                events_written_total=self._events_written,
                heartbeats_written_total=self._beats_written,
                dropped_events_total=self._dropped,
                failures_total=self._failures,
            )

    # -- queue internals (called with the lock held) ---------------------------------------

    def _beat_due(self, run_id: str) -> float:
        """When the run's next heartbeat may be written (-inf: none written yet)."""
        last = self._beat_written.get(run_id)
        return float("-inf") if last is None else last + self._interval * (1 - BEAT_SLACK)

    def _notify_if_sooner(self, ready: float) -> None:
        """Wake the waiting thread if an item is ready before it would look again."""
        if self._wake_at is None or ready < self._wake_at:
            self._wake.notify()

    def _drop_beat(self, run_id: str) -> None:
        if self._beats.pop(run_id, None) is not None:
            self._size -= 1
        self._beat_written.pop(run_id, None)

    def _enforce_backlog(self) -> None:
        """Over `max_backlog`, shed the oldest queued events; snapshots are never dropped."""
        excess = self._size + self._inflight - self.settings.max_backlog
        if excess <= 0:
            return
        for pending in self._runs.values():
            while excess > 0 and pending.events:
                del pending.events[min(pending.events)]
                self._size -= 1
                self._dropped += 1
                excess -= 1
            if excess <= 0:
                break
        if self._dropped:
            self._drop_note = (
                f"backlog over {self.settings.max_backlog}: dropped {self._dropped} events "
                "(run `toolwarden db rebuild` once the database is back)"
            )

    def _take(self, now: float) -> _Batch:
        runs: dict[str, _PendingRun] = {}
        for run_id in list(self._runs)[:MAX_RUNS_PER_BATCH]:
            runs[run_id] = self._runs.pop(run_id)
        beats: dict[str, _PendingBeat] = {}
        for run_id in list(self._beats):
            if len(beats) >= MAX_BEATS_PER_BATCH:
                break
            if self._beat_due(run_id) <= now:
                beats[run_id] = self._beats.pop(run_id)
        taken = sum(p.size() for p in runs.values()) + len(beats)
        self._size -= taken
        self._inflight = taken
        since = [p.since for p in runs.values()] + [b.since for b in beats.values()]
        self._inflight_since = min(since) if since else None
        return _Batch(runs, beats)

    def _put_back(self, batch: _Batch) -> None:
        """Return a batch that failed, under anything newer that arrived meanwhile."""
        self._inflight, self._inflight_since = 0, None
        for run_id, old in batch.runs.items():
            new = self._runs.get(run_id)
            if new is None:
                self._runs[run_id] = old
                self._size += old.size()
                continue
            before = new.size()
            if old.status.updated_at > new.status.updated_at:
                new.status = old.status
            for seq, event in old.events.items():
                new.events.setdefault(seq, event)
            new.since = min(new.since, old.since)
            self._size += new.size() - before
        for run_id, beat in batch.beats.items():
            if run_id not in self._beats and run_id not in self._finished:
                self._beats[run_id] = beat
                self._size += 1
        # Keep the oldest runs first so they are retried first.
        self._runs = dict(sorted(self._runs.items(), key=lambda item: item[1].since))

    def _ready_at(self, now: float) -> float | None:
        """When to take the next batch (None: nothing queued): `BATCH_LINGER_SECONDS` after the
        oldest queued snapshot arrived or the first throttled heartbeat fell due, at once when
        a full batch of snapshots is waiting."""
        first: float | None = None
        if self._runs:
            if len(self._runs) >= MAX_RUNS_PER_BATCH:
                return now
            # Oldest first: new runs are appended and `_put_back` re-sorts by `since`.
            first = next(iter(self._runs.values())).since
        if self._beats:
            due = min(max(b.since, self._beat_due(r)) for r, b in self._beats.items())
            first = due if first is None else min(first, due)
        return None if first is None else first + BATCH_LINGER_SECONDS

    # -- the thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        self._probe()
        backoff = self._retry_initial
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._stopping:
                        queued = bool(self._runs or self._beats)
                        if not queued or (self._deadline is not None and now >= self._deadline):
                            self._wake_at = _BUSY
                            return
                        # No lingering, and throttled heartbeats are flushed on the way out.
                        batch = self._take(float("inf"))
                        break
                    ready = self._ready_at(now)
                    if ready is not None and ready <= now:
                        batch = self._take(now)
                        break
                    self._wake_at = ready
                    self._wake.wait(None if ready is None else ready - now)
                self._wake_at = _BUSY
            if batch.empty():
                continue
            try:
                self._write(batch)
            except Exception as exc:
                message = _describe(exc)
                with self._lock:
                    first = self._connected or self._failures == 0
                (log.warning if first else log.debug)(
                    "mirror %s unavailable (%s); queueing and retrying in %.1fs",
                    redact(self.url),
                    message,
                    backoff,
                )
                with self._lock:
                    self._put_back(batch)
                    self._connected = False
                    self._failures += 1
                    self._last_error = message
                    deadline = time.monotonic() + backoff
                    while True:
                        remaining = deadline - time.monotonic()
                        if self._stopping and self._deadline is not None:
                            remaining = min(remaining, self._deadline - time.monotonic())
                        if remaining <= 0:
                            break
                        self._wake.wait(remaining)
                    if self._stopping and self._deadline is not None and time.monotonic() >= self._deadline:
                        return
                backoff = min(backoff * 2, self._retry_max)
                self._dispose_engine()
                continue
            if backoff > self._retry_initial:
                log.info("mirror %s is back; catching up", redact(self.url))
            backoff = self._retry_initial

    def _make_engine(self) -> Engine:
        # The writer's transactions all write: on SQLite they take the write lock up front. No
        # pre-ping: a dead pooled connection fails the batch, which disposes the engine and
        # retries it (an extra `SELECT 1` per transaction otherwise).
        return make_engine(self.url, busy_timeout_ms=self._busy_timeout_ms, write_lock=True, pre_ping=False)

    def _dispose_engine(self) -> None:
        if self._engine is not None:
            try:
                self._engine.dispose()
            except Exception:
                log.debug("mirror: dispose failed", exc_info=True)
            self._engine = None

    def _ensure_schema(self) -> None:
        if self._schema_checked:
            return
        from toolwarden.mirror.migrate import current, head_revision, known_revisions, upgrade

        revision = current(self.url)
        if revision != head_revision() and (revision is None or revision in known_revisions()):
            # The writer never creates directories: a missing data dir is a failure to retry.
            upgrade(self.url, create_dir=False)
        self._schema_checked = True

    def _probe(self) -> None:
        """Check the database once at start, so stats say early whether it is reachable."""
        try:
            self._ensure_schema()
            if self._engine is None:
                self._engine = self._make_engine()
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                conn.rollback()
        except Exception as exc:
            with self._lock:
                self._connected = False
                self._last_error = _describe(exc)
            self._dispose_engine()
            return
        with self._lock:
            self._connected = True

    def _write(self, batch: _Batch) -> None:
        from toolwarden.mirror.projection import apply_heartbeats, apply_updates

        self._ensure_schema()
        if self._engine is None:
            self._engine = self._make_engine()
        updates = [
            RunUpdate(status=p.status, events=[p.events[s] for s in sorted(p.events)])
            for p in batch.runs.values()
        ]
        beats = [(run_id, beat.live) for run_id, beat in batch.beats.items()]
        with self._engine.begin() as conn:
            apply_updates(conn, updates)
            apply_heartbeats(conn, beats)
        with self._lock:
            # The throttle is anchored to when the written heartbeat arrived, not to the commit,
            # so the write latency does not push every later heartbeat back.
            for run_id, beat in batch.beats.items():
                self._beat_written[run_id] = beat.received
            for update in updates:
                if update.status.state.terminal:
                    self._beat_written.pop(update.status.run_id, None)
            self._inflight, self._inflight_since = 0, None
            self._connected = True
            self._written += len(updates) + len(beats)
            self._events_written += sum(len(u.events) for u in updates)
            self._beats_written += len(beats)
            self._last_write_at = datetime.now(UTC)
            self._last_error = None
