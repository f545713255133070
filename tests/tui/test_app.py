"""The TUI against the real dev server: approve, reject, cancel, races, reconnecting."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from textual.pilot import Pilot
from textual.widgets import Button, Input, Static

import toolwarden.client
from tests.conftest import make_settings
from tests.support import eventually, free_port, tool
from toolwarden.client import RunHandle, Supervisor, SupervisorError, Unavailable
from toolwarden.config import ApprovalSettings, Settings
from toolwarden.models import ApprovalState, RunResult, RunState, RunStatus
from toolwarden.tui.app import ToolwardenApp, make_app
from toolwarden.tui.loader import SupervisorAPI
from toolwarden.tui.screens.decision import DecisionDialog
from toolwarden.tui.screens.dialogs import CancelDialog
from toolwarden.worker.runner import build_worker

RETRY_INTERVAL = 0.25  # between retries until a deadline

SIZE = (140, 40)
REFRESH = 0.5
# Generous on purpose: the machine may be loaded by other suites, and the app's own limits
# (2 s per status query, then 30 s before asking a silent run again) must fit inside.
DEADLINE = 60.0


def app_for(supervisor: Supervisor, settings: Settings) -> ToolwardenApp:
    async def factory() -> SupervisorAPI:
        return supervisor

    return make_app(factory, settings, approver="alice", refresh_seconds=REFRESH)


async def start_asking(
    supervisor: Supervisor, settings: Settings, run_id: str, *extra: str
) -> RunHandle:
    spec = settings.run_spec(
        run_id=run_id, argv=[*tool("approval_tool.py"), "deploy", "Deploy to prod", *extra]
    )
    return await supervisor.start_run(spec)


async def until(
    pilot: Pilot[None], check: Callable[[], object], timeout: float = DEADLINE
) -> None:
    async def probe() -> bool:
        await pilot.pause()
        return bool(check())

    met: bool = await eventually(probe, timeout=timeout)
    assert met


async def type_into(pilot: Pilot[None], selector: str, text: str) -> None:
    """Type into an input of the active screen (one key press, then the rest set at once:
    pressing keys one by one is slow under coverage and tests nothing more)."""
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    await pilot.press(text[0])
    field.value = text
    field.cursor_position = len(text)
    await pilot.pause()


def notified(app: ToolwardenApp, count: int) -> bool:
    return len(app._notifications) >= count


async def result_of(handle: RunHandle) -> RunResult:
    """`handle.result()`, asked again while the status query inside it times out: on a starved
    machine the in-process worker can answer later than the client's query timeout."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await handle.result()
        except SupervisorError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(RETRY_INTERVAL)


async def status_of(handle: RunHandle) -> RunStatus:
    """`handle.status()`, asked again while the query times out (see `result_of`)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await handle.status()
        except SupervisorError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(RETRY_INTERVAL)


def approval_ids(app: ToolwardenApp) -> list[str]:
    return list(app.approvals_table.order)


def stdout_of(settings: Settings, run_id: str) -> str:
    return "".join(
        p.read_text() for p in sorted((settings.logs_dir / run_id).glob("*.stdout.log"))
    )


async def open_dialog(
    pilot: Pilot[None], app: ToolwardenApp, approval_id: str, key: str
) -> DecisionDialog:
    """Select `approval_id` in the approvals table and press `key` (a or r) on it."""
    await until(pilot, lambda: approval_id in approval_ids(app))
    app.approvals_table.move_cursor(row=approval_ids(app).index(approval_id))
    await until(pilot, lambda: app.selection == ("approval", approval_id))
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, DecisionDialog))
    dialog = app.screen
    assert isinstance(dialog, DecisionDialog)
    return dialog


async def select_run(pilot: Pilot[None], app: ToolwardenApp, run_id: str) -> None:
    """Focus the runs table and select `run_id` in it once it is listed."""
    await until(pilot, lambda: run_id in app.runs_table.order)
    app.runs_table.focus()
    app.runs_table.move_cursor(row=app.runs_table.order.index(run_id))
    await until(pilot, lambda: app.selection == ("run", run_id))


async def test_empty_state(supervisor: Supervisor, settings: Settings) -> None:
    app = app_for(supervisor, settings)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None)
        assert app.approvals_table.row_count == 0
        # Other tests' runs share the server but not the task queue; the approvals panel may
        # show theirs, so the empty state is checked on what this app was given.
        empty = app.query_one("#approvals-empty", Static)
        if not app.snapshot or not app.snapshot.approvals:
            assert empty.display
            assert "No pending approvals" in str(empty.render())
        assert not app.query_one("#banner").display


async def test_approve_from_the_tui(
    supervisor: Supervisor, settings: Settings, worker: None, run_id: Callable[[str], str]
) -> None:
    rid = run_id("tui-approve")
    handle = await start_asking(supervisor, settings, rid, "--details", '{"env": "prod"}')
    app = app_for(supervisor, settings)
    async with app.run_test(size=SIZE) as pilot:
        await open_dialog(pilot, app, f"{rid}/deploy", "a")
        await type_into(pilot, "#reason", "looks good")
        await pilot.press("tab")
        await type_into(pilot, "#response", '{"ticket": "OPS-1"}')
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, DecisionDialog))
        result = await result_of(handle)
        assert result.state is RunState.SUCCEEDED
        await until(pilot, lambda: f"{rid}/deploy" not in approval_ids(app))
        await until(
            pilot,
            lambda: app.snapshot is not None
            and any(r.run_id == rid and r.state is RunState.SUCCEEDED for r in app.snapshot.runs),
        )
    out = stdout_of(settings, rid)
    decision = json.loads(out.split("DECISION ", 1)[1].splitlines()[0])
    assert decision["approved"] is True
    assert decision["by"] == "alice"
    assert decision["reason"] == "looks good"
    assert decision["response"] == {"ticket": "OPS-1"}


async def test_reject_requires_a_reason(
    supervisor: Supervisor, settings: Settings, worker: None, run_id: Callable[[str], str]
) -> None:
    rid = run_id("tui-reject")
    handle = await start_asking(supervisor, settings, rid)
    app = app_for(supervisor, settings)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot, app, f"{rid}/deploy", "r")
        reason = dialog.query_one("#reason", Input)
        await until(pilot, lambda: reason.has_focus)
        await pilot.press("enter")  # no reason: refused in the dialog
        error = dialog.query_one("#dialog-error", Static)
        await until(pilot, lambda: "reason is required" in str(error.render()))
        await type_into(pilot, "#reason", "not today")
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, DecisionDialog))
        result = await result_of(handle)
    assert result.state is not RunState.SUCCEEDED  # the tool was told no and exited 1
    status = await status_of(handle)
    record = status.approvals[0]
    assert record.state is ApprovalState.REJECTED
    assert record.reason == "not today"
    assert record.decided_by == "alice"
    assert '"approved": false' in stdout_of(settings, rid)


async def test_decision_elsewhere_is_reported_in_the_dialog(
    supervisor: Supervisor, settings: Settings, worker: None, run_id: Callable[[str], str]
) -> None:
    rid = run_id("tui-race")
    handle = await start_asking(supervisor, settings, rid)
    app = app_for(supervisor, settings)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot, app, f"{rid}/deploy", "a")
        # Someone else rejects from the CLI while the dialog is open.
        elsewhere = await supervisor.decide(
            f"{rid}/deploy", approve=False, by="bob", reason="freeze"
        )
        assert elsewhere.took_effect

        def reported() -> bool:
            text = str(dialog.query_one("#dialog-state", Static).render())
            return "rejected by bob" in text

        await until(pilot, reported)
        assert dialog.query_one("#confirm", Button).disabled
        await pilot.press("enter")  # closes; nothing is sent
        await until(pilot, lambda: not isinstance(app.screen, DecisionDialog))
    await result_of(handle)
    status = await status_of(handle)
    assert status.approvals[0].decided_by == "bob"


async def test_decision_race_reported_by_decide_result(
    supervisor: Supervisor, settings: Settings, worker: None, run_id: Callable[[str], str]
) -> None:
    """Even when the dialog's poll has not seen it yet, the update's answer is shown."""
    rid = run_id("tui-race2")
    handle = await start_asking(supervisor, settings, rid)
    app = app_for(supervisor, settings)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot, app, f"{rid}/deploy", "a")
        # Hold the dialog's state poll off (it skips while a decision is being sent), so it
        # cannot notice carol's decision first, however slowly this test runs.
        dialog.submitting = True
        await supervisor.decide(f"{rid}/deploy", approve=True, by="carol")
        assert dialog.closed_state is None
        # Confirm at once, in the same step: the decide update answers "already approved".
        dialog.submitting = False
        dialog.action_confirm()

        def reported() -> bool:
            text = str(dialog.query_one("#dialog-state", Static).render())
            return "approved by carol" in text

        await until(pilot, reported)
        await pilot.press("escape")
    await result_of(handle)


async def test_an_approver_off_the_allowlist_is_refused_in_the_dialog(
    client: Client, settings: Settings, worker: None, run_id: Callable[[str], str]
) -> None:
    guarded = settings.model_copy(update={"approvals": ApprovalSettings(approvers=["bob"])})
    supervisor = Supervisor(client, guarded)
    rid = run_id("tui-allow")
    handle = await start_asking(supervisor, guarded, rid)
    app = app_for(supervisor, guarded)  # decides as alice
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot, app, f"{rid}/deploy", "a")
        await pilot.press("enter")
        error = dialog.query_one("#dialog-error", Static)
        await until(pilot, lambda: "Not allowed: alice is not an allowed approver" in str(
            error.render()))
        assert isinstance(app.screen, DecisionDialog)  # still open: nothing was decided
        await pilot.press("escape")
    assert [a.state for a in (await status_of(handle)).approvals] == [ApprovalState.PENDING]
    await handle.cancel()


async def test_cancel_a_run(
    supervisor: Supervisor, settings: Settings, worker: None, run_id: Callable[[str], str]
) -> None:
    rid = run_id("tui-cancel")
    handle = await start_asking(supervisor, settings, rid)
    app = app_for(supervisor, settings)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, rid)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CancelDialog))
        await type_into(pilot, "#reason", "wrong branch")
        await pilot.press("enter")
        result = await result_of(handle)
        assert result.state is RunState.CANCELLED
        await until(
            pilot,
            lambda: app.snapshot is not None
            and any(r.run_id == rid and r.state is RunState.CANCELLED for r in app.snapshot.runs),
        )


async def test_server_gone_and_back(
    tmp_path: Path, supervisor: Supervisor, settings: Settings
) -> None:
    closed = make_settings(tmp_path / "closed", f"127.0.0.1:{free_port()}")
    back = False
    calls = 0

    async def factory() -> SupervisorAPI:
        nonlocal calls
        calls += 1
        if not back:
            return await Supervisor.connect(closed)  # nobody listens: Unavailable
        return supervisor

    app = make_app(factory, settings, approver="alice", refresh_seconds=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one("#banner", Static)
        await until(pilot, lambda: banner.display)
        assert "unavailable" in str(banner.render())
        await until(pilot, lambda: calls >= 2)  # it keeps trying by itself
        back = True
        await until(pilot, lambda: not banner.display and app.snapshot is not None)


async def test_supervisor_that_fails_is_replaced(
    supervisor: Supervisor, settings: Settings
) -> None:
    """A connected supervisor whose calls start failing: banner, then a fresh connection."""

    class Broken:
        def __init__(self) -> None:
            self.settings = settings

        def __getattr__(self, name: str) -> Callable[..., Awaitable[None]]:
            async def fail(*args: object, **kwargs: object) -> None:
                raise Unavailable("connection refused")

            return fail

    made: list[object] = []

    async def factory() -> SupervisorAPI:
        made.append(object())
        if len(made) == 1:
            return Broken()  # type: ignore[return-value]
        return supervisor

    app = make_app(factory, settings, approver="alice", refresh_seconds=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one("#banner", Static)
        await until(pilot, lambda: banner.display)
        await until(pilot, lambda: len(made) >= 2 and not banner.display)


async def test_keys_open_and_close_screens(
    supervisor: Supervisor, settings: Settings, worker: None, run_id: Callable[[str], str]
) -> None:
    rid = run_id("tui-keys")
    handle = await start_asking(supervisor, settings, rid)
    app = app_for(supervisor, settings)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, rid)
        # Log view: shows the tool's output from the log files.
        await pilot.press("l")
        from textual.widgets import Log

        from toolwarden.tui.screens.log import LogScreen

        await until(pilot, lambda: isinstance(app.screen, LogScreen))
        log = app.screen.query_one(Log)
        await until(pilot, lambda: any("asking deploy" in line for line in log.lines))
        await pilot.press("escape")
        # Web UI address.
        await pilot.press("o")
        from toolwarden.tui.screens.dialogs import FilterDialog, WebUIDialog

        await until(pilot, lambda: isinstance(app.screen, WebUIDialog))
        assert rid in str(app.screen.query_one("#url", Static).render())
        await pilot.press("escape")
        # Help lists every key.
        await pilot.press("question_mark")
        from toolwarden.tui.screens.help import HelpScreen

        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        # Filter by a tool no run has: the runs panel empties, then clears.
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FilterDialog))
        await type_into(pilot, "#tool", "no-such-tool")
        await pilot.press("enter")
        await until(pilot, lambda: app.runs_table.row_count == 0 and app.refreshes > 0)
        await until(pilot, lambda: app.query_one("#runs-empty", Static).display)
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FilterDialog))
        app.screen.query_one("#tool", Input).value = ""
        await pilot.press("enter")
        await until(pilot, lambda: rid in app.runs_table.order)
        # Search narrows both panels.
        await pilot.press("slash")
        await type_into(pilot, "#search", rid)
        await until(pilot, lambda: app.runs_table.order == [rid])
        await pilot.press("escape")
        await until(pilot, lambda: not app.search_text)
        # Details screen.
        app.runs_table.focus()
        app.runs_table.move_cursor(row=app.runs_table.order.index(rid))
        await pilot.press("enter")
        from toolwarden.tui.screens.details import DetailsScreen

        await until(pilot, lambda: isinstance(app.screen, DetailsScreen))
        await pilot.press("escape")
        await handle.cancel()
        await pilot.press("q")


async def test_keys_without_selection_warn(tmp_path: Path) -> None:
    from tests.tui.fakes import empty, fixed_clock

    sup = empty(tmp_path)

    async def factory() -> SupervisorAPI:
        return sup

    app = make_app(factory, sup.settings, clock=fixed_clock, approver="alice")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None)
        for count, key in enumerate(["a", "r", "c", "l", "o"], start=1):
            await pilot.press(key)
            await until(pilot, functools.partial(notified, app, count))
            assert app.screen is app.screen_stack[0]  # no dialog opened on nothing


async def test_the_first_load_waits_for_the_first_frame(tmp_path: Path) -> None:
    """`toolwarden tui` starts with the collector paused; the first frame turns it back on,
    and only then does the first load (which imports temporalio) start."""
    import gc

    from tests.tui.fakes import empty, fixed_clock

    sup = empty(tmp_path)
    loads_when_painted: list[bool] = []

    async def factory() -> SupervisorAPI:
        loads_when_painted.append(gc.isenabled())
        return sup

    app = make_app(factory, sup.settings, clock=fixed_clock, approver="alice")
    gc.disable()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None)
            assert gc.isenabled()
            assert loads_when_painted[:1] == [True]
    finally:
        gc.unfreeze()
        gc.enable()


async def test_a_decision_no_worker_applies_is_queued_with_a_warning(
    supervisor: Supervisor,
    settings: Settings,
    client: Client,
    run_id: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(toolwarden.client, "DECIDE_TIMEOUT", timedelta(seconds=1))
    rid = run_id("tui-queued")
    async with contextlib.AsyncExitStack() as worker:
        await worker.enter_async_context(build_worker(client, settings))
        # Exit and relaunch: the run waits with no tool, so stopping the worker stops nothing.
        handle = await start_asking(supervisor, settings, rid, "--or-exit")
        app = app_for(supervisor, settings)
        async with app.run_test(size=SIZE) as pilot:
            await open_dialog(pilot, app, f"{rid}/deploy", "a")
            await worker.aclose()
            seen = len(app._notifications)
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, DecisionDialog))
            await until(pilot, lambda: notified(app, seen + 1))
            (last,) = list(app._notifications)[-1:]
            assert last.message.startswith(f"queued: no worker answers run {rid} now")
            assert last.severity == "warning"
    async with build_worker(client, settings):
        result = await result_of(handle)
    assert result.state is RunState.SUCCEEDED
    assert '"approved": true' in stdout_of(settings, rid)
