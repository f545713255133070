"""Prompt mode: a tool's own terminal prompt (`rm: remove 'x'?`) becomes an approval.

The tool runs on a pseudo-terminal (`process.launch(terminal=True)`). When its output has
settled on a last line that matches one of the run's patterns, and the tool sleeps waiting for
input, the line goes to a person through the same approval path as a tool's own request; the
decision is typed back as `answer_yes` or `answer_no` and Enter. Plain functions and asyncio,
no Temporal: the activity hands in how to ask.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from toolwarden.models import ApprovalAsk, Decision
from toolwarden.process import Launched

# Output must be quiet this long before its last line counts as a prompt: a tool that prints
# a matching line and goes on printing is not asking anything.
SETTLE_SECONDS = 0.3
POLL_SECONDS = 0.1
# A settled prompt whose tool is not (yet) reading is checked again at most this often.
RECHECK_SECONDS = 1.0
DETAIL_LINES = 20
SCREEN_CHARS = 16_000
MAX_SUMMARY = 1000
ENTER = "\r"  # what the Enter key sends; the terminal turns it into "\n" for line-mode readers

# CSI (colours, cursor moves), OSC (titles) and two-byte escapes.
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# Where Linux puts a process that sleeps reading a terminal, directly or through select/poll.
TERMINAL_WAITS = frozenset(
    {
        "wait_woken",  # n_tty_read
        "n_tty_read",
        "do_select",
        "core_sys_select",
        "do_sys_poll",
        "poll_schedule_timeout",
        "ep_poll",
        "do_epoll_wait",
    }
)

log = logging.getLogger(__name__)

AskPerson = Callable[[ApprovalAsk], Awaitable[Decision]]


def compile_patterns(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    """The run's prompt patterns; `RunSpec` has already checked that each one compiles."""
    return [re.compile(pattern) for pattern in patterns]


def visible_lines(text: str) -> list[str]:
    """Lines as a terminal shows them: escapes dropped, a carriage return overwrites the line."""
    plain = _ESCAPE.sub("", text)
    lines = []
    for raw in plain.split("\n"):
        line = raw.rstrip("\r")
        lines.append(line.rsplit("\r", 1)[-1])
    return lines


def prompt_key(attempt: int, number: int, line: str) -> str:
    """One approval per prompt shown: the same line asked again later is a new approval."""
    digest = hashlib.sha256(line.encode()).hexdigest()[:8]
    return f"prompt-{attempt}-{number}-{digest}"


class PromptScreen:
    """The tool's recent terminal output: all of it, and what came since the last answer."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._recent = ""
        self._fresh = ""
        self._answer: str | None = None
        self.received = 0
        self.changed_at = time.monotonic()

    def feed(self, chunk: bytes) -> None:
        text = self._decoder.decode(chunk)
        self.received += len(chunk)
        self.changed_at = time.monotonic()
        self._recent = (self._recent + text)[-SCREEN_CHARS:]
        self._fresh = (self._fresh + text)[-SCREEN_CHARS:]

    def settled(self, quiet: float) -> bool:
        return time.monotonic() - self.changed_at >= quiet

    def prompt_line(self) -> str | None:
        """The last non-blank line since the last answer, unless it is that answer's echo."""
        lines = [line.strip() for line in visible_lines(self._fresh) if line.strip()]
        if not lines:
            return None
        if len(lines) == 1 and lines[0] == self._answer:
            return None  # the terminal echoing what we typed
        return lines[-1]

    def recent_lines(self, count: int = DETAIL_LINES) -> list[str]:
        lines = visible_lines(self._recent)
        while lines and not lines[-1].strip():
            lines.pop()
        return lines[-count:]

    def answered(self, answer: str) -> None:
        self._fresh = ""
        self._answer = answer.strip()


def matching_prompt(screen: PromptScreen, patterns: Sequence[re.Pattern[str]]) -> str | None:
    line = screen.prompt_line()
    if line is not None and any(pattern.search(line) for pattern in patterns):
        return line
    return None


def _wait_channel(pid: int) -> str | None:
    try:
        name = Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return None
    return None if name in ("", "0") else name


def waiting_for_input(session: int) -> bool:
    """Whether the tool's session (id = its leader's pid) sits waiting, as if for a keystroke.

    No member may be running; and where Linux names the kernel function a process sleeps in,
    one of them must sleep where terminal reads do (a `sleep` or a busy tool does not).
    """
    import psutil

    channels: list[str | None] = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) != session:
                continue
            status = proc.status()
        except (OSError, psutil.Error):
            continue
        if status == psutil.STATUS_ZOMBIE:
            continue
        if status != psutil.STATUS_SLEEPING:
            return False
        channels.append(_wait_channel(proc.pid))
    if not channels:
        return False
    known = [name for name in channels if name is not None]
    return not known or any(name in TERMINAL_WAITS for name in known)


async def answer_prompts(
    launched: Launched,
    screen: PromptScreen,
    patterns: Sequence[re.Pattern[str]],
    *,
    attempt: int,
    answer_yes: str,
    answer_no: str,
    ask: AskPerson,
    settle: float = SETTLE_SECONDS,
) -> None:
    """Until the terminal closes: each prompt the tool waits at goes to `ask`, then is answered.

    If the tool prints anything while the person decides, it has moved on (its own timeout, a
    signal): the decision is recorded but nothing is typed, so an answer never lands on a
    prompt nobody saw.
    """
    terminal = launched.terminal
    assert terminal is not None, "prompt mode needs the tool on a terminal"
    number = 0
    not_waiting: tuple[int, float] | None = None  # (output seen, when) of the last negative check
    while not terminal.closed:
        await asyncio.sleep(POLL_SECONDS)
        if not screen.settled(settle):
            continue
        line = matching_prompt(screen, patterns)
        if line is None:
            continue
        if (
            not_waiting is not None
            and not_waiting[0] == screen.received
            and time.monotonic() - not_waiting[1] < RECHECK_SECONDS
        ):
            continue
        if not await asyncio.to_thread(waiting_for_input, launched.pgid):
            not_waiting = (screen.received, time.monotonic())
            continue
        not_waiting = None
        number += 1
        shown_at = screen.received
        request = ApprovalAsk(
            key=prompt_key(attempt, number, line),
            summary=line[:MAX_SUMMARY],
            details={"prompt": line, "output": screen.recent_lines()},
        )
        try:
            decision = await ask(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the run ended or Temporal is away: the tool stays at its prompt
            log.warning("prompt %r could not be put to a person: %s", line, exc)
            return
        if screen.received != shown_at:
            log.info("prompt %s was decided after the tool moved on; nothing typed", request.key)
            continue
        answer = answer_yes if decision.approved else answer_no
        screen.answered(answer)
        if not terminal.write(answer + ENTER):
            log.warning("prompt %s decided, but the tool's terminal takes no input", request.key)


def start_answering(
    launched: Launched,
    screen: PromptScreen,
    patterns: Sequence[str],
    *,
    attempt: int,
    answer_yes: str,
    answer_no: str,
    ask: AskPerson,
) -> asyncio.Task[None]:
    return asyncio.create_task(
        answer_prompts(
            launched,
            screen,
            compile_patterns(patterns),
            attempt=attempt,
            answer_yes=answer_yes,
            answer_no=answer_no,
            ask=ask,
        )
    )


async def stop_answering(task: asyncio.Task[None]) -> None:
    """Stop the answering loop; a fault in it is logged, it never fails the run."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception:
            log.exception("prompt answering failed")
