"""The agent policy: which tool calls run at once, which are refused, and which ask a person.

A rule is `Tool` (every call of that tool) or `Tool(pattern)`: the pattern is matched against
the call's subject, the one input that says what the call does:

- `Bash`: the command (`Bash(git status*)`); `*` matches any text, spaces and slashes included;
- `Read`, `Edit`, `Write`, `MultiEdit`, `NotebookEdit`: the file path, relative to the agent's
  working directory when it lies inside it (`Edit(src/**)`); `*` stays within one path
  segment, `**` crosses segments;
- `WebFetch`: the URL; `Glob`, `Grep`: the pattern; any other tool: no subject, so only the
  bare `Tool` form matches it.

`*` alone as the tool name matches every tool. Deny rules are looked at first, then ask, then
allow: a call matched by a deny rule is refused whatever else matches. An allow rule with a
pattern never matches a Bash command that chains, pipes, substitutes or redirects (`;`, `&`,
`|`, `` ` ``, `$(`, `<`, `>`, a newline): `Bash(git status*)` must not allow
`git status; rm -rf ~`, so such a command falls through to ask. With `defaults` on,
calls no listed rule matches fall to `DEFAULT_RULES` (read-only tools allowed, the rest ask).

Pure functions of the policy and the call, so the supervisor and the tests share them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from toolwarden.models import AgentPolicy

_RULE = re.compile(r"^\s*(?P<tool>[A-Za-z0-9_*.:-]+)\s*(?:\((?P<pattern>.*)\))?\s*$", re.DOTALL)

PATH_TOOLS = frozenset({"Read", "Edit", "Write", "MultiEdit", "NotebookEdit", "NotebookRead"})
_SUBJECT_FIELDS = {
    "Bash": "command",
    "WebFetch": "url",
    "Glob": "pattern",
    "Grep": "pattern",
    **{name: "file_path" for name in PATH_TOOLS},
}
_PATH_FIELDS = {"file_path", "notebook_path", "path"}


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"


# Read-only tools run at once; anything that changes files, runs commands or reaches the
# network asks. A tool nobody listed (a new tool, an MCP tool) asks too: unknown is risky.
DEFAULT_RULES: tuple[tuple[Verdict, str], ...] = (
    *((Verdict.ALLOW, name) for name in ("Read", "Glob", "Grep", "LS", "NotebookRead", "TodoWrite")),
    *((Verdict.ASK, name) for name in ("Bash", "Edit", "MultiEdit", "Write", "NotebookEdit", "WebFetch")),
    (Verdict.ASK, "*"),
)


@dataclass(frozen=True, slots=True)
class Rule:
    tool: str
    pattern: str | None

    def __str__(self) -> str:
        return self.tool if self.pattern is None else f"{self.tool}({self.pattern})"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    verdict: Verdict
    rule: str  # the rule that decided, as written, e.g. "allow Bash(git status*)"

    @property
    def decided_by(self) -> str:
        return f"policy: {self.rule}"


def parse_rule(text: str) -> Rule:
    """A rule from its text; raises ValueError naming what is wrong."""
    match = _RULE.match(text)
    if match is None:
        raise ValueError(f"invalid policy rule {text!r}: write Tool or Tool(pattern), e.g. Bash(git status*)")
    pattern = match.group("pattern")
    if pattern is not None and not pattern.strip():
        raise ValueError(f"invalid policy rule {text!r}: the pattern in parentheses is empty")
    return Rule(tool=match.group("tool"), pattern=None if pattern is None else pattern.strip())


def check_policy(policy: AgentPolicy) -> AgentPolicy:
    """Raise ValueError on the first rule that does not parse (config validation)."""
    for text in (*policy.deny, *policy.ask, *policy.allow):
        parse_rule(text)
    return policy


def subject(tool_name: str, tool_input: Any, cwd: str | None = None) -> str | None:
    """What a call acts on: the command, the path (relative to `cwd` inside it) or the URL."""
    if not isinstance(tool_input, Mapping):
        return None
    field = _SUBJECT_FIELDS.get(tool_name)
    if field is None:
        return None
    value = tool_input.get(field)
    if field == "file_path" and value is None:
        value = tool_input.get("notebook_path")
    if not isinstance(value, str):
        return None
    if field in _PATH_FIELDS or field == "file_path":
        return _relative(value, cwd)
    return value


def _relative(path: str, cwd: str | None) -> str:
    pure = PurePosixPath(path)
    if cwd and pure.is_absolute():
        try:
            return str(pure.relative_to(PurePosixPath(cwd)))
        except ValueError:
            return path
    return path


@lru_cache(maxsize=1024)
def _compile(pattern: str, paths: bool) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            parts.append(".*")
            i += 2
            if paths and pattern.startswith("/", i):
                parts[-1] = "(?:.*/)?"  # `src/**/x` matches `src/x` too
                i += 1
        elif pattern[i] == "*":
            parts.append("[^/]*" if paths else ".*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]" if paths else ".")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts), re.DOTALL)


def rule_matches(rule: Rule, tool_name: str, tool_input: Any, cwd: str | None = None) -> bool:
    if rule.tool != "*" and rule.tool != tool_name:
        return False
    if rule.pattern is None:
        return True
    found = subject(tool_name, tool_input, cwd)
    if found is None:
        return False
    return _compile(rule.pattern, tool_name in PATH_TOOLS).fullmatch(found) is not None


_SHELL_CHAINING = re.compile(r"[;&|`\n<>]|\$\(")


def _chains_commands(tool_name: str, tool_input: Any) -> bool:
    """A Bash command that runs more than one command, or redirects: no pattern allows it."""
    if tool_name != "Bash":
        return False
    command = subject(tool_name, tool_input)
    return command is not None and _SHELL_CHAINING.search(command) is not None


def evaluate(policy: AgentPolicy, tool_name: str, tool_input: Any, cwd: str | None = None) -> PolicyDecision:
    """The verdict on one call, and the rule that gave it."""
    listed = (
        *((Verdict.DENY, text) for text in policy.deny),
        *((Verdict.ASK, text) for text in policy.ask),
        *((Verdict.ALLOW, text) for text in policy.allow),
    )
    for verdict, text, origin in _candidates(listed, policy.defaults):
        rule = parse_rule(text)
        if verdict is Verdict.ALLOW and rule.pattern is not None and _chains_commands(tool_name, tool_input):
            continue  # `Bash(git status*)` must not allow `git status; rm -rf ~`
        if rule_matches(rule, tool_name, tool_input, cwd):
            return PolicyDecision(verdict=verdict, rule=f"{verdict.value} {text}{origin}")
    # No defaults and no rule matched: a person decides.
    return PolicyDecision(verdict=Verdict.ASK, rule="ask (no rule matched)")


def _candidates(
    listed: Sequence[tuple[Verdict, str]], defaults: bool
) -> Sequence[tuple[Verdict, str, str]]:
    rules = [(verdict, text, "") for verdict, text in listed]
    if defaults:
        rules.extend((verdict, text, " (default)") for verdict, text in DEFAULT_RULES)
    return rules
