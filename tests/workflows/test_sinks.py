"""Run sinks on real runs: every event reaches them in order, and a broken sink changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.support import eventually, tool
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import LiveDetails, RunState, RunUpdate
from toolwarden.worker.runner import build_worker


class RecordingSink:
    def __init__(self) -> None:
        self.updates: list[RunUpdate] = []
        self.beats: list[tuple[str, LiveDetails]] = []

    def run_changed(self, update: RunUpdate) -> None:
        self.updates.append(update)

    def heartbeat(self, run_id: str, live: LiveDetails) -> None:
        self.beats.append((run_id, live))


class BrokenSink:
    def run_changed(self, update: RunUpdate) -> None:
        raise RuntimeError("the dashboard is down")

    def heartbeat(self, run_id: str, live: LiveDetails) -> None:
        raise RuntimeError("the dashboard is down")


async def test_a_broken_sink_neither_fails_the_run_nor_starves_the_next_sink(
    client: Client, settings: Settings, run_id, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    go = tmp_path / "go"
    recording = RecordingSink()
    supervisor = Supervisor(client, settings)
    with caplog.at_level(logging.ERROR, logger="toolwarden.sinks"):
        async with build_worker(client, settings, sinks=[BrokenSink(), recording]):
            handle = await supervisor.start_run(
                settings.run_spec(run_id=run_id(), argv=[*tool("wait_for_file.py"), str(go)])
            )
            await eventually(lambda: recording.beats, what="a heartbeat reached the sink")
            go.touch()
            result = await handle.result()
            events = await handle.events()
    assert result.state is RunState.SUCCEEDED
    assert {run for run, _ in recording.beats} == {handle.run_id}
    assert recording.beats[-1][1].pid is not None
    handed = [e for update in recording.updates for e in update.events]
    assert handed == events  # every event, once, in the order the workflow recorded them
    assert [e.kind for e in handed][-2:] == ["attempt_ended", "run_ended"]
    assert recording.updates[-1].status.state is RunState.SUCCEEDED
    failures = [r.getMessage() for r in caplog.records if "BrokenSink failed" in r.getMessage()]
    assert any("heartbeat" in f for f in failures) and any("on run" in f for f in failures)
