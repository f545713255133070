"""Codex CLI (`codex exec`): the hook we install, as the installed version (0.171.0) allows.

What this version really does (found by running it; docs/agents.md has the details):

- `codex exec` runs with approval policy "never" whatever `-a`/`approval_policy` say, so its
  PermissionRequest hook never fires there. Its PreToolUse hook does fire, for every shell
  command (`tool_name` "Bash", `tool_input.command`), and blocks: a `deny` stops the command and
  the model sees the reason. So the adapter installs a blocking PreToolUse hook.
- Hooks from `-c hooks...` (and from any config) run only once trusted; an untrusted hook is
  skipped without a word, which would let every command through. The adapter therefore passes
  `--dangerously-bypass-hook-trust` (see docs/agents.md for what else that lets run).
- Codex cannot defer a call and exit. So the hook holds codex while a person decides, up to
  its timeout (`hook_timeout`). In `agent_mode: defer` (the default) it then hands the wait to
  the supervisor: it re-sends the call with `wait: false`, answers deny naming the approval,
  the model ends its turn and codex exits 0. The attempt ends awaiting the decision
  (`awaits_decision`), with the session id the hook input carried, and after the decision the
  run relaunches `codex exec [the same options] resume SESSION PROMPT` (`launch_argv`).
- In the resumed session the model asks for the command again with a new `tool_use_id`, so an
  approval is keyed by the session and the command (`approval_key`), not by the call: the call
  asked again gets the recorded decision at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from toolwarden.models import AgentMode, RunSpec

HOOK_COMMAND = "toolwarden hook codex"
# The hook answers this long before codex would kill it (codex fails open on a timeout).
HOOK_MARGIN = timedelta(seconds=10)
MIN_HOOK_TIMEOUT = timedelta(seconds=20)
# In defer mode the hook holds codex at most this long (codex's own default hook timeout),
# then the turn ends and the session is resumed after the decision.
DEFER_HOOK_TIMEOUT = timedelta(seconds=600)
TRUST_FLAG = "--dangerously-bypass-hook-trust"
SUBCOMMANDS = frozenset({"exec", "e"})
RESUME = "resume"
# The session files `exec resume` reads are not written with this flag: no resume then.
EPHEMERAL_FLAG = "--ephemeral"
# Options of `codex exec` / `codex exec resume` that take a value (0.171.0's --help).
VALUE_OPTIONS = frozenset(
    {
        "-c", "--config", "--enable", "--disable", "--remote", "--remote-auth-token-env",
        "-i", "--image", "-m", "--model", "--local-provider", "-p", "--profile", "-s",
        "--sandbox", "-C", "--cd", "--add-dir", "--thread-source", "--cyber-access-program",
        "--output-schema", "--color", "-o", "--output-last-message",
    }
)
# Left out of a relaunch: the images belong to the first prompt, which the session has;
# `--last` would pick a session instead of ours.
DROPPED_ON_RESUME = frozenset({"-i", "--image", "--last"})
# What the resumed session is told; the model then asks for the same command again.
RESUME_PROMPT = (
    "toolwarden: the command you were waiting on has been decided by a person. Continue the "
    "task where you stopped: run that same command again, and toolwarden answers it at once "
    "(it runs if it was approved; if it was rejected you get the reason)."
)


_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._:-]+")


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def resumable(argv: Sequence[str], spec: RunSpec) -> bool:
    """A wait that outlives the hook ends the turn and resumes the session (defer mode)."""
    return spec.agent_mode is AgentMode.DEFER and EPHEMERAL_FLAG not in argv


def hook_timeout(spec: RunSpec, resume: bool) -> timedelta:
    """The hook's `timeout` in codex's config: how long it may hold codex on one call."""
    timeout = spec.agent_hook_timeout
    if resume:
        timeout = min(timeout, DEFER_HOOK_TIMEOUT)
    return max(timeout, MIN_HOOK_TIMEOUT)


def hook_override(spec: RunSpec, resume: bool = False) -> str:
    """The `-c` override installing our PreToolUse hook on every tool."""
    timeout = hook_timeout(spec, resume)
    answer_within = int((timeout - HOOK_MARGIN).total_seconds())
    command = f"{HOOK_COMMAND} --timeout {answer_within}"
    if resume:
        command += " --resume"
    return (
        'hooks.PreToolUse=[{matcher="*",hooks=[{type="command",'
        f"command={_toml_string(command)},timeout={int(timeout.total_seconds())}}}]}}]"
    )


def _subcommand_end(words: Sequence[str]) -> int:
    """The index right after `exec` (1 when there is none: options go after the program)."""
    return next((i + 1 for i, word in enumerate(words[1:], start=1) if word in SUBCOMMANDS), 1)


def launch_argv(argv: Sequence[str], spec: RunSpec, resume: str | None = None) -> list[str]:
    """`codex exec ...` with our hook; on a relaunch `codex exec ... resume SESSION PROMPT`.

    The hook options go right after the subcommand. A relaunch keeps every option of the
    run (the sandbox, the model, `-c` overrides...) where it was, `exec`'s before `resume`
    (this version applies them to the resumed session), drops the prompt and any session the
    argv named, and sends `RESUME_PROMPT` as the new turn.
    """
    words = list(argv)
    at = _subcommand_end(words)
    ours = [TRUST_FLAG, "-c", hook_override(spec, resumable(words, spec))]
    if resume is None:
        return [*words[:at], *ours, *words[at:]]
    exec_options, resume_options = _options(words[at:])
    return [*words[:at], *ours, *exec_options, RESUME, *resume_options, resume, RESUME_PROMPT]


def _options(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """The options of `exec` and of `exec resume` in `words`, without the positionals."""
    exec_options: list[str] = []
    resume_options: list[str] = []
    into = exec_options
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            break  # the rest is the prompt (or a session id and a prompt)
        if word.startswith("-") and word != "-":
            takes_value = word in VALUE_OPTIONS
            value = [words[i]] if takes_value and i < len(words) else []
            i += len(value)
            if word.split("=", 1)[0] not in DROPPED_ON_RESUME:
                into.extend([word, *value])
        elif word == RESUME and into is exec_options:
            into = resume_options
        # any other positional is the prompt, or the session id the argv resumed: dropped
    return exec_options, resume_options


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def approval_key(session_id: str | None, tool_use_id: str | None, tool_input: Any) -> str:
    """`codex-<session>-<hash of the canonical input>`: one command in one session.

    Codex gives a command a new `tool_use_id` each time the model asks for it, and a resumed
    session asks again, so the key binds to the session and the input. An approval (or a
    rejection) thus covers that exact command for the rest of the session.
    """
    digest = hashlib.sha256(canonical_json(tool_input).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    scope = _UNSAFE_KEY_CHARS.sub("-", session_id or tool_use_id or "call").strip("-.:_")[:80] or "call"
    return f"codex-{scope}-{digest}"


def awaits_decision(
    exit_code: int | None, deferred: Sequence[str], undecided: Sequence[str], session: str | None
) -> bool:
    """Codex ended its turn (exit 0) after a hook handed its wait over: resume the session.

    `deferred` are the calls whose hook re-sent them with `wait: false` (decided since or
    not: the command did not run either way); `undecided` the calls still pending when codex
    exited, whose hook necessarily answered without a decision. Without a session id there is
    nothing to resume, and the run ends with codex's exit.
    """
    return exit_code == 0 and session is not None and bool(deferred or undecided)
