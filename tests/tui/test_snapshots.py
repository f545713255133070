"""Snapshot tests of the main screens (layout only), with fixed data and a fixed clock.

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the report before committing the new SVGs.

Every screenshot must come out byte-identical on an idle laptop and on a starved CI machine,
so each test waits for what it needs (data loaded, the dialog up with its field focused, the
error shown) and then for the app to be `settled`, instead of trusting a pause to be enough.
Nothing moves afterwards: the clock is fixed, the refresh period is an hour, and input cursors
do not blink headless (`TextField`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input, Static

from tests.support import eventually
from tests.tui.fakes import FakeSupervisor, empty, fixed_clock, fleet
from toolwarden.tui.app import ToolwardenApp, make_app
from toolwarden.tui.loader import SupervisorAPI
from toolwarden.tui.screens.decision import DecisionDialog
from toolwarden.tui.screens.help import HelpScreen

SIZE = (140, 40)
DEADLINE = 30.0
SnapCompare = Callable[..., bool]


def app_of(supervisor: FakeSupervisor) -> ToolwardenApp:
    async def factory() -> SupervisorAPI:
        return supervisor

    # A long refresh period: the first load happens at mount, and nothing moves afterwards.
    return make_app(
        factory, supervisor.settings, clock=fixed_clock, approver="alice", refresh_seconds=3600
    )


def the_app(pilot: Pilot[None]) -> ToolwardenApp:
    app = pilot.app
    assert isinstance(app, ToolwardenApp)
    return app


async def until(pilot: Pilot[None], check: Callable[[], object]) -> None:
    async def probe() -> bool:
        await pilot.pause()
        return bool(check())

    met: bool = await eventually(probe, timeout=DEADLINE, interval=0.01)
    assert met


def busy(pilot: Pilot[None]) -> bool:
    """Work is still under way: a worker running, or a message waiting in any queue."""
    app = pilot.app
    if any(worker.is_running for worker in app.workers):
        return True
    nodes = [app, *app.screen_stack, *app.screen.walk_children()]
    return any(node.message_queue_size for node in nodes)


async def settled(pilot: Pilot[None]) -> None:
    """Until the app has nothing left to do and two screenshots in a row agree."""
    deadline = time.monotonic() + DEADLINE
    previous = ""
    while True:
        await pilot.pause()
        if not busy(pilot):
            shot = pilot.app.export_screenshot()
            if shot == previous:
                return
            previous = shot
        else:
            previous = ""
        assert time.monotonic() < deadline, f"the app did not settle within {DEADLINE}s"


async def loaded(pilot: Pilot[None]) -> None:
    app = the_app(pilot)
    await until(pilot, lambda: app.snapshot is not None)
    await settled(pilot)


async def dialog_open(pilot: Pilot[None]) -> DecisionDialog:
    """The decision dialog is up, its reason field focused and its first state check done."""
    app = the_app(pilot)
    await until(
        pilot,
        lambda: isinstance(app.screen, DecisionDialog)
        and isinstance(app.focused, Input)
        and app.focused.id == "reason"
        and not app.screen.polling,
    )
    dialog = app.screen
    assert isinstance(dialog, DecisionDialog)
    return dialog


def test_main_screen(snap_compare: SnapCompare, tmp_path: Path) -> None:
    assert snap_compare(app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=loaded)


def test_empty_state(snap_compare: SnapCompare, tmp_path: Path) -> None:
    assert snap_compare(app_of(empty(tmp_path)), terminal_size=SIZE, run_before=loaded)


def test_run_details(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def select_run(pilot: Pilot[None]) -> None:
        app = the_app(pilot)
        await loaded(pilot)
        await pilot.press("tab", "down", "down", "down")
        await until(pilot, lambda: app.selection == ("run", "etl-260115-99aa01"))
        await settled(pilot)

    assert snap_compare(app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=select_run)


def test_approve_dialog(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def open_dialog(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("a")
        dialog = await dialog_open(pilot)
        assert dialog.approve
        await settled(pilot)

    assert snap_compare(app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=open_dialog)


def test_reject_dialog_requires_reason(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def reject_without_reason(pilot: Pilot[None]) -> None:
        app = the_app(pilot)
        await loaded(pilot)
        await pilot.press("down")
        await until(pilot, lambda: app.selection == ("approval", "dbtool-260115-d4e5f6/drop-table"))
        await pilot.press("r")
        dialog = await dialog_open(pilot)
        assert not dialog.approve
        await pilot.press("enter")
        error = dialog.query_one("#dialog-error", Static)
        await until(pilot, lambda: "reason is required" in str(error.render()))
        await settled(pilot)

    assert snap_compare(
        app_of(fleet(tmp_path)), terminal_size=SIZE, run_before=reject_without_reason
    )


def test_help_screen(snap_compare: SnapCompare, tmp_path: Path) -> None:
    async def help_(pilot: Pilot[None]) -> None:
        app = the_app(pilot)
        await loaded(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await settled(pilot)

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
        await until(pilot, lambda: app.banner.display)
        await settled(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=banner)
