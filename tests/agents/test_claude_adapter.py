"""The Claude adapter's pure parts: argv on launch and on resume, keys, summaries, settings."""

from __future__ import annotations

import json

from toolwarden.agents import claude
from toolwarden.models import AgentMode, RunSpec


def spec(**fields: object) -> RunSpec:
    return RunSpec(run_id="r1", tool_name="claude", argv=["claude", "-p", "clean the build"], **fields)


def hook_of(settings_json: str) -> dict[str, object]:
    document = json.loads(settings_json)
    (entry,) = document["hooks"]["PreToolUse"]
    assert entry["matcher"] == "*"
    (hook,) = entry["hooks"]
    return hook  # type: ignore[no-any-return]


def test_launch_adds_our_settings_and_keeps_the_users_flags() -> None:
    argv = ["claude", "-p", "clean the build", "--model", "opus", "--output-format", "json"]
    launched = claude.launch_argv(argv, spec())
    assert launched[:2] == ["claude", "--settings"]
    assert launched[3:] == argv[1:]
    hook = hook_of(launched[2])
    assert hook["type"] == "command"
    # Long even when deferring: a second call in the same turn blocks (the fallback).
    assert hook["command"] == f"toolwarden hook claude --timeout {24 * 3600 - 10}"
    assert hook["timeout"] == 24 * 3600


def test_resume_drops_the_prompt_and_resumes_the_session() -> None:
    argv = ["claude", "--model", "opus", "-p", "clean the build", "--verbose"]
    launched = claude.launch_argv(argv, spec(), resume="0455fb64-602a")
    assert "clean the build" not in launched
    assert launched[launched.index("--resume") + 1] == "0455fb64-602a"
    kept = ["--model", "opus", "-p", "--verbose"]
    assert [w for w in launched if w in kept] == kept
    # A prompt given last, after the flags, is found too; a flag's value is not taken for it.
    assert "do it" not in claude.launch_argv(["claude", "-p", "--verbose", "do it"], spec(), resume="s")
    assert "opus" in claude.launch_argv(["claude", "-p", "--model", "opus"], spec(), resume="s")


def test_blocking_mode_sets_a_long_hook_timeout_and_answers_before_it() -> None:
    hook = hook_of(claude.settings_document(spec(agent_mode=AgentMode.BLOCK)))
    assert hook["timeout"] == 24 * 3600
    assert hook["command"] == f"toolwarden hook claude --timeout {24 * 3600 - 10} --block"


def test_key_binds_the_exact_call() -> None:
    key = claude.approval_key("toolu_01ABC", {"command": "rm -rf build", "description": "x"})
    assert key.startswith("claude-toolu_01ABC-")
    same = claude.approval_key("toolu_01ABC", {"description": "x", "command": "rm -rf build"})
    assert same == key  # canonical JSON: key order does not matter
    assert claude.approval_key("toolu_01ABC", {"command": "rm -rf src"}) != key
    assert claude.approval_key("toolu_02", {"command": "rm -rf build", "description": "x"}) != key
    weird = claude.approval_key("id with spaces/and/slashes" * 10, None)
    assert len(weird) <= 128 and " " not in weird and "/" not in weird


def test_summaries_name_the_tool_and_what_it_acts_on() -> None:
    assert claude.summary("Bash", {"command": "rm -rf build"}) == "Bash: rm -rf build"
    assert claude.summary("Edit", {"file_path": "/w/src/a.py", "old_string": "a"}, "/w") == "Edit: src/a.py"
    assert claude.summary("WebFetch", {"url": "https://x.test/"}) == "WebFetch: https://x.test/"
    assert claude.summary("Bash", {"command": "echo a\n  echo b"}) == "Bash: echo a echo b"
    assert claude.summary("Task", {}) == "Task"
    assert len(claude.summary("Bash", {"command": "x" * 5000})) < 400


def test_details_carry_the_input_and_stay_within_the_protocol_limit() -> None:
    ask = claude.approval_ask(
        "claude", "Write", {"file_path": "big.txt", "content": "y" * 100_000},
        tool_use_id="toolu_1", session_id="s1", cwd="/w", rule="ask Write (default)",
    )
    assert ask.summary == "Write: big.txt"
    assert isinstance(ask.details, dict) and ask.details["session_id"] == "s1"
    assert len(json.dumps(ask.details)) < 32768
    small = claude.approval_ask(
        "claude", "Bash", {"command": "ls"}, tool_use_id="t", session_id=None, cwd=None, rule="r"
    )
    assert isinstance(small.details, dict) and small.details["tool_input"] == {"command": "ls"}


def test_only_a_clean_exit_with_an_undecided_deferral_awaits() -> None:
    assert claude.awaits_decision(0, ["claude-t-1"])
    assert not claude.awaits_decision(0, [])
    assert not claude.awaits_decision(1, ["claude-t-1"])
