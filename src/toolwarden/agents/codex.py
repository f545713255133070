"""Codex CLI (`codex exec`): the hook we install, as the installed version (0.171.0) allows.

What this version really does (found by running it; docs/agents.md has the details):

- `codex exec` runs with approval policy "never" whatever `-a`/`approval_policy` say, so its
  PermissionRequest hook never fires there. Its PreToolUse hook does fire, for every shell
  command (`tool_name` "Bash", `tool_input.command`), and blocks: a `deny` stops the command and
  the model sees the reason. So the adapter installs a blocking PreToolUse hook.
- Hooks from `-c hooks...` (and from any config) run only once trusted; an untrusted hook is
  skipped without a word, which would let every command through. The adapter therefore passes
  `--dangerously-bypass-hook-trust` (see docs/agents.md for what else that lets run).
- Codex cannot defer a call and exit; the wait holds the process, up to the hook's timeout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta

from toolwarden.models import RunSpec

HOOK_COMMAND = "toolwarden hook codex"
HOOK_MARGIN = timedelta(seconds=10)
MIN_HOOK_TIMEOUT = timedelta(seconds=60)
TRUST_FLAG = "--dangerously-bypass-hook-trust"
SUBCOMMANDS = frozenset({"exec", "e"})


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def hook_override(spec: RunSpec) -> str:
    """The `-c` override installing our PreToolUse hook on every tool."""
    timeout = max(spec.agent_hook_timeout, MIN_HOOK_TIMEOUT)
    answer_within = int((timeout - HOOK_MARGIN).total_seconds())
    command = f"{HOOK_COMMAND} --timeout {answer_within}"
    return (
        'hooks.PreToolUse=[{matcher="*",hooks=[{type="command",'
        f"command={_toml_string(command)},timeout={int(timeout.total_seconds())}}}]}}]"
    )


def launch_argv(argv: Sequence[str], spec: RunSpec) -> list[str]:
    """`codex exec ...` with our hook: the options go right after the subcommand."""
    words = list(argv)
    at = next((i + 1 for i, word in enumerate(words[1:], start=1) if word in SUBCOMMANDS), 1)
    words[at:at] = [TRUST_FLAG, "-c", hook_override(spec)]
    return words
