"""Snapshot tests of the main screens (layout only), with fixed data and a fixed clock.

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the report before committing the new SVGs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from tests.tui.fakes import FakeSupervisor, empty, fixed_clock, fleet
from toolwarden.tui.app import ToolwardenApp, make_app
from toolwarden.tui.backend import SupervisorAPI

SIZE = (140, 40)
SnapCompare = Callable[..., bool]


def app_of(supervisor: FakeSupervisor) -> ToolwardenApp:
    async def factory() -> SupervisorAPI:
        return supervisor

    # A long refresh period: the first load happens at mount, and nothing moves afterwards.
    return make_app(
        factory, supervisor.settings, clock=fixed_clock, approver="alice", refresh_seconds=3600
    )


async def loaded(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, ToolwardenApp)
    while app.snapshot is None:
        await pilot.pause(0.01)
    await pilot.pause()


def test_main_screen(snap_compare: SnapCompare, tmp_path: Path) -> None:
    assert snap_compare(app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=loaded)


def test_empty_state(snap_compare: SnapCompare, tmp_path: Path) -> None:
    assert snap_compare(app_of(empty(tmp_path)), terminal_size=SIZE, run_before=loaded)


def test_run_details(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def select_run(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("tab", "down", "down", "down")

    assert snap_compare(app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=select_run)


def test_approve_dialog(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def open_dialog(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("a")
        await pilot.pause()

    assert snap_compare(app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=open_dialog)


def test_reject_dialog_requires_reason(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def reject_without_reason(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("down", "r")
        await pilot.pause()
        await pilot.press("enter")

    assert snap_compare(
        app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=reject_without_reason
    )


def test_help_screen(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def help_(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("question_mark")

    assert snap_compare(app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=help_)


def test_banner_when_unavailable(snap_compare: SnapCompare, tmp_path: Path) -> None:
    supervisor = fleet(tmp_path)

    async def factory() -> SupervisorAPI:
        from toolwarden.client import Unavailable

        raise Unavailable("Temporal does not answer at 127.0.0.1:7233")

    app = make_app(
        factory, supervisor.settings, clock=fixed_clock, approver="alice", refresh_seconds=3600
    )

    async def banner(pilot: Pilot[None]) -> None:
        while not app.banner.display:
            await pilot.pause(0.01)

    assert snap_compare(app, terminal_size=SIZE, run_before=banner)
