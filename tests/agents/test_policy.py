"""The agent policy language: rules, patterns, precedence and the documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolwarden.agents.policy import Verdict, evaluate, parse_rule, subject
from toolwarden.config import ConfigError, load_settings
from toolwarden.models import AgentPolicy

DEFAULTS = AgentPolicy()


@pytest.mark.parametrize(
    ("tool_name", "tool_input", "verdict"),
    [
        ("Read", {"file_path": "/w/src/a.py"}, Verdict.ALLOW),
        ("Glob", {"pattern": "**/*.py"}, Verdict.ALLOW),
        ("Grep", {"pattern": "TODO"}, Verdict.ALLOW),
        ("Bash", {"command": "ls"}, Verdict.ASK),
        ("Edit", {"file_path": "/w/src/a.py"}, Verdict.ASK),
        ("Write", {"file_path": "/w/new.txt", "content": "x"}, Verdict.ASK),
        ("WebFetch", {"url": "https://example.com"}, Verdict.ASK),
        ("mcp__db__drop", {"table": "users"}, Verdict.ASK),  # unknown tools ask
    ],
)
def test_defaults(tool_name: str, tool_input: dict[str, str], verdict: Verdict) -> None:
    decision = evaluate(DEFAULTS, tool_name, tool_input, "/w")
    assert decision.verdict is verdict
    assert decision.rule.endswith("(default)")


def test_bash_prefix_pattern_allows_only_matching_commands() -> None:
    policy = AgentPolicy(allow=["Bash(git status*)"])
    allowed = evaluate(policy, "Bash", {"command": "git status --short"})
    assert (allowed.verdict, allowed.rule) == (Verdict.ALLOW, "allow Bash(git status*)")
    assert allowed.decided_by == "policy: allow Bash(git status*)"
    assert evaluate(policy, "Bash", {"command": "git push"}).verdict is Verdict.ASK
    # The pattern must match the whole command, not a prefix of a longer chain of words.
    assert evaluate(policy, "Bash", {"command": "echo; git status"}).verdict is Verdict.ASK
    chains = ("git status; rm -rf ~", "git status && curl x | sh", "git status $(rm x)", "git status > f")
    for chained in chains:
        assert evaluate(policy, "Bash", {"command": chained}).verdict is Verdict.ASK, chained


def test_path_patterns_are_relative_to_the_working_directory() -> None:
    policy = AgentPolicy(allow=["Edit(src/**)"])
    assert evaluate(policy, "Edit", {"file_path": "/w/src/pkg/a.py"}, "/w").verdict is Verdict.ALLOW
    assert evaluate(policy, "Edit", {"file_path": "src/a.py"}, "/w").verdict is Verdict.ALLOW
    assert evaluate(policy, "Edit", {"file_path": "/w/setup.py"}, "/w").verdict is Verdict.ASK
    assert evaluate(policy, "Edit", {"file_path": "/elsewhere/src/a.py"}, "/w").verdict is Verdict.ASK
    one_level = AgentPolicy(allow=["Edit(src/*)"])
    assert evaluate(one_level, "Edit", {"file_path": "/w/src/a.py"}, "/w").verdict is Verdict.ALLOW
    assert evaluate(one_level, "Edit", {"file_path": "/w/src/pkg/a.py"}, "/w").verdict is Verdict.ASK


def test_deny_beats_ask_beats_allow() -> None:
    policy = AgentPolicy(allow=["Bash"], ask=["Bash(git *)"], deny=["Bash(git push*)"])
    assert evaluate(policy, "Bash", {"command": "make"}).verdict is Verdict.ALLOW
    assert evaluate(policy, "Bash", {"command": "git commit"}).verdict is Verdict.ASK
    denied = evaluate(policy, "Bash", {"command": "git push --force"})
    assert (denied.verdict, denied.rule) == (Verdict.DENY, "deny Bash(git push*)")


def test_user_rules_override_defaults_and_defaults_can_be_off() -> None:
    assert evaluate(AgentPolicy(deny=["Read"]), "Read", {"file_path": "x"}).verdict is Verdict.DENY
    bare = AgentPolicy(defaults=False)
    decision = evaluate(bare, "Read", {"file_path": "x"})
    assert (decision.verdict, decision.rule) == (Verdict.ASK, "ask (no rule matched)")
    assert evaluate(AgentPolicy(allow=["*"]), "Bash", {"command": "rm -rf /"}).verdict is Verdict.ALLOW


def test_a_pattern_never_matches_a_call_without_its_subject() -> None:
    policy = AgentPolicy(allow=["Bash(ls*)", "Task(anything)"])
    assert evaluate(policy, "Bash", {"not_command": "ls"}).verdict is Verdict.ASK
    assert evaluate(policy, "Bash", "not an object").verdict is Verdict.ASK
    assert evaluate(policy, "Task", {"prompt": "anything"}).verdict is Verdict.ASK
    assert subject("Bash", {"command": 3}) is None


@pytest.mark.parametrize("text", ["", "Bash(", "Bash()", "two words", "Bash(x) trailing"])
def test_bad_rules_are_refused_with_the_rule_named(text: str) -> None:
    with pytest.raises(ValueError, match="invalid policy rule"):
        parse_rule(text)


def test_profile_policy_is_validated_and_reaches_the_run_spec(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "tools:\n  claude:\n    agent: claude\n    agent_mode: block\n"
        "    policy:\n      allow: ['Bash(git status*)']\n      deny: ['WebFetch']\n"
    )
    settings = load_settings(good)
    spec = settings.run_spec(run_id="r1", argv=["claude", "-p", "x"])
    assert spec.agent == "claude" and spec.agent_mode == "block"
    assert spec.agent_policy.allow == ["Bash(git status*)"] and spec.agent_policy.deny == ["WebFetch"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools:\n  claude:\n    agent: claude\n    policy:\n      allow: ['Bash(']\n")
    with pytest.raises(ConfigError, match="invalid policy rule"):
        load_settings(bad)
