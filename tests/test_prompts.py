"""Prompt mode's parts with real processes on a real pseudo-terminal (no Temporal here).

The runs end to end, through the worker and a person's decision, are in
tests/workflows/test_prompt_runs.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import eventually, tool
from toolwarden.models import ApprovalAsk, ApprovalState, Decision
from toolwarden.process import Launched, drain_output, kill_group, launch
from toolwarden.prompts import (
    PromptScreen,
    matching_prompt,
    prompt_key,
    start_answering,
    stop_answering,
    visible_lines,
    waiting_for_input,
)


def test_visible_lines_drop_escapes_and_honour_carriage_returns() -> None:
    text = "\x1b[1;32mok\x1b[0m\r\n\x1b]0;title\x07 10%\r 50%\rDelete it? "
    assert visible_lines(text) == ["ok", "Delete it? "]


def test_the_prompt_is_the_last_line_and_the_echo_of_an_answer_is_not_one() -> None:
    screen = PromptScreen()
    screen.feed(b"working\r\nremove 'a'? ")
    assert screen.prompt_line() == "remove 'a'?"
    screen.answered("y")
    assert screen.prompt_line() is None
    screen.feed(b"y\r\n")  # the terminal echoes what was typed
    assert screen.prompt_line() is None
    screen.feed("remove 'b' (\u00e9t\u00e9)? ".encode()[:-3])  # a prompt split mid-character
    screen.feed("remove 'b' (\u00e9t\u00e9)? ".encode()[-3:])
    assert screen.prompt_line() == "remove 'b' (\u00e9t\u00e9)?"
    assert screen.recent_lines() == ["working", "remove 'a'? y", "remove 'b' (\u00e9t\u00e9)? "]


def test_only_a_matching_line_is_a_prompt() -> None:
    import re

    screen = PromptScreen()
    screen.feed(b"Overwrite 'x'? ")
    assert matching_prompt(screen, [re.compile(r"remove .*\?")]) is None
    assert matching_prompt(screen, [re.compile(r"remove"), re.compile(r"^Overwrite")]) == (
        "Overwrite 'x'?"
    )


def test_prompt_keys_are_valid_and_differ_per_prompt_shown() -> None:
    first = prompt_key(1, 1, "remove 'a'?")
    assert first == prompt_key(1, 1, "remove 'a'?")
    assert len({first, prompt_key(1, 2, "remove 'a'?"), prompt_key(2, 1, "remove 'a'?")}) == 3
    ApprovalAsk(key=first, summary="s")  # the key pattern accepts it


@pytest.fixture
async def on_terminal(tmp_path: Path) -> AsyncIterator[list[Launched]]:
    started: list[Launched] = []
    yield started
    for launched in started:
        await kill_group(launched, 1.0)
        await drain_output(launched)


async def start(
    argv: list[str], tmp_path: Path, started: list[Launched], screen: PromptScreen | None = None
) -> Launched:
    launched = await launch(
        argv,
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
        stdout_path=tmp_path / "out.log",
        stderr_path=tmp_path / "err.log",
        log_cap_bytes=1000,
        tail_lines=10,
        terminal=True,
        on_output=screen.feed if screen else None,
    )
    started.append(launched)
    return launched


async def test_on_a_terminal_the_tool_has_a_controlling_tty_and_its_output_is_logged(
    tmp_path: Path, on_terminal: list[Launched]
) -> None:
    script = (
        "import os, sys; open('/dev/tty').close();"
        "print('TTY', os.isatty(0), os.isatty(1), os.isatty(2), os.getsid(0) == os.getpid());"
        "print('to stderr', file=sys.stderr); print('x' * 5000)"
    )
    launched = await start([sys.executable, "-c", script], tmp_path, on_terminal)
    assert await launched.process.wait() == 0
    await drain_output(launched)
    log = (tmp_path / "out.log").read_bytes()
    assert b"TTY True True True True\r\n" in log
    assert b"to stderr" in log  # one stream, as on a terminal
    assert (tmp_path / "err.log").read_bytes() == b""
    assert launched.stdout.truncated and launched.stdout.written_bytes == 1000
    assert launched.terminal is not None and launched.terminal.closed
    assert launched.terminal.write("y\r") is False


async def test_waiting_for_input_tells_a_prompt_from_a_sleep_and_a_busy_loop(
    tmp_path: Path, on_terminal: list[Launched]
) -> None:
    prompting = await start([*tool("prompting.py"), "Go on?"], tmp_path, on_terminal)
    sleeping = await start(["sleep", "60"], tmp_path, on_terminal)
    busy = await start([*tool("busy_silent.py"), "60"], tmp_path, on_terminal)
    await eventually(lambda: waiting_for_input(prompting.pgid), what="the prompt reads")
    for _ in range(5):  # each check is a fresh look at /proc, not a wait for time
        assert not waiting_for_input(sleeping.pgid)
        assert not waiting_for_input(busy.pgid)


def approve_all(asked: list[ApprovalAsk], approved: bool = True):  # type: ignore[no-untyped-def]
    async def ask(request: ApprovalAsk) -> Decision:
        asked.append(request)
        state = ApprovalState.APPROVED if approved else ApprovalState.REJECTED
        return Decision(key=request.key, outcome=state, approved=approved)

    return ask


@pytest.mark.parametrize(("approved", "typed"), [(True, "'yes'"), (False, "'nope'")])
async def test_each_prompt_is_asked_once_and_answered(
    tmp_path: Path, on_terminal: list[Launched], approved: bool, typed: str
) -> None:
    screen = PromptScreen()
    launched = await start(
        [*tool("prompting.py"), "First?", "Second?"], tmp_path, on_terminal, screen
    )
    asked: list[ApprovalAsk] = []
    answering = start_answering(
        launched, screen, [r"\[y/N\]"], attempt=3, answer_yes="yes", answer_no="nope",
        ask=approve_all(asked, approved),
    )
    try:
        assert await asyncio.wait_for(launched.process.wait(), 30) == 0
    finally:
        await stop_answering(answering)
    await drain_output(launched)
    assert [a.summary for a in asked] == ["First? [y/N]", "Second? [y/N]"]
    assert [a.key for a in asked] == [
        prompt_key(3, 1, "First? [y/N]"), prompt_key(3, 2, "Second? [y/N]")
    ]
    details = asked[1].details
    assert isinstance(details, dict) and details["prompt"] == "Second? [y/N]"
    assert f"ANSWER 1 {typed}" in details["output"]  # type: ignore[operator]
    assert list(launched.tail)[-2:] == [f"Second? [y/N] {typed[1:-1]}", f"ANSWER 2 {typed}"]


async def test_a_pattern_that_never_matches_leaves_the_tool_alone(
    tmp_path: Path, on_terminal: list[Launched]
) -> None:
    screen = PromptScreen()
    launched = await start(
        [sys.executable, "-c", "print('Proceed? [y/N]'); print('done')"],
        tmp_path, on_terminal, screen,
    )
    asked: list[ApprovalAsk] = []
    answering = start_answering(
        launched, screen, [r"^Delete"], attempt=1, answer_yes="y", answer_no="n",
        ask=approve_all(asked),
    )
    assert await asyncio.wait_for(launched.process.wait(), 30) == 0
    await stop_answering(answering)
    assert asked == []


async def test_a_tool_that_closes_its_terminal_before_exiting_is_not_hung_up(
    tmp_path: Path, on_terminal: list[Launched]
) -> None:
    # rm -i and cp -i close stdin, stdout and stderr on their way out; hanging up the terminal
    # then (closing our side at EOF) would kill them with SIGHUP before they exit.
    launched = await start(
        ["sh", "-c", "echo bye; exec 0<&- 1>&- 2>&-; sleep 0.5; exit 7"], tmp_path, on_terminal
    )
    assert await asyncio.wait_for(launched.process.wait(), 30) == 7
    await drain_output(launched)
    assert list(launched.tail) == ["bye"]


def test_the_example_aider_profile_knows_aiders_prompts() -> None:
    from toolwarden.config import load_settings
    from toolwarden.prompts import compile_patterns

    example = Path(__file__).parent.parent / "examples" / "supervision.yaml"
    patterns = compile_patterns(load_settings(example).tools["aider"].prompts)
    for output, is_prompt in [
        (b"Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: ", True),
        (b"Add src/app.py to the chat? (Y)es/(N)o/(A)ll/(S)kip all/(D)on't ask again [Yes]: ", True),
        (b"Create new file? (Y)es/(N)o [No]: ", True),
        (b"Applied edit to src/app.py\r\n", False),
    ]:
        screen = PromptScreen()
        screen.feed(output)
        assert (matching_prompt(screen, patterns) is not None) is is_prompt, output
