"""Codex end to end: the real `codex exec` binary, a real worker, the scripted Responses API.

`codex exec` (0.171.0) never asks for approval itself, so the adapter installs a blocking
PreToolUse hook; these tests pin that it really gates the command.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import agent_binary
from tests.agents.model_api import ModelAPI, Script
from tests.support import eventually
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import ApprovalRecord, RunSpec, RunState

pytestmark = pytest.mark.usefixtures("worker")
COMMAND = "touch made-by-codex"  # codex refuses `rm -rf` by its own rules, before any hook


@pytest.fixture
def codex_bin() -> str:
    found = agent_binary("codex")
    if found is None:
        pytest.skip("the codex binary is not installed: npm install --prefix .agents-cli @openai/codex")
    return found


@pytest.fixture
def codex_api() -> Iterator[ModelAPI]:
    server = ModelAPI(Script(calls=[("Bash", {"command": COMMAND})])).start()
    try:
        yield server
    finally:
        server.stop()


def codex_spec(
    settings: Settings, run_id: str, codex_bin: str, tmp_path: Path, api: ModelAPI, **overrides: Any
) -> RunSpec:
    home = tmp_path / "codex-home"
    (home / ".codex").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    provider = [
        "-c", "model_provider=tw", "-c", "model=gpt-test", "-c", "model_providers.tw.name=tw",
        "-c", f'model_providers.tw.base_url="{api.base_url}/v1"',
        "-c", 'model_providers.tw.wire_api="responses"', "-c", 'model_providers.tw.env_key="OPENAI_API_KEY"',
        "-c", "model_providers.tw.request_max_retries=0", "-c", "model_providers.tw.stream_max_retries=0",
    ]
    return settings.run_spec(
        run_id=run_id,
        argv=[codex_bin, "exec", "--skip-git-repo-check", "-s", "workspace-write", *provider, "make it"],
        cwd=str(work),
        env={"HOME": str(home), "CODEX_HOME": str(home / ".codex"), "OPENAI_API_KEY": "sk-test-dummy"},
        overrides={"agent": "codex", **overrides},
    )


@pytest.mark.parametrize("approve", [True, False])
async def test_a_person_decides_while_codex_waits(
    supervisor: Supervisor, settings: Settings, run_id: Any, codex_bin: str, tmp_path: Path,
    codex_api: ModelAPI, approve: bool,
) -> None:
    spec = codex_spec(settings, run_id("codex"), codex_bin, tmp_path, codex_api)
    handle = await supervisor.start_run(spec)

    async def asked() -> ApprovalRecord | None:
        status = await handle.status()
        return status.pending_approvals[0] if status.pending_approvals and status.live else None

    approval = await eventually(asked, timeout=120, what="codex's command as an approval")
    assert approval.summary == f"Bash: {COMMAND}"
    assert approval.key.startswith("codex-")
    made = tmp_path / "work" / "made-by-codex"
    assert not made.exists()
    await supervisor.decide(approval.approval_id, approve=approve, by="erin",
                            reason=None if approve else "no files today")
    result = await handle.result()
    assert (result.state, result.attempt) == (RunState.SUCCEEDED, 1)
    assert made.exists() is approve
    if not approve:
        assert any("no files today" in text for text in codex_api.tool_results())


async def test_policy_allows_codex_with_no_person_asked(
    supervisor: Supervisor, settings: Settings, run_id: Any, codex_bin: str, tmp_path: Path,
    codex_api: ModelAPI,
) -> None:
    spec = codex_spec(settings, run_id("codex"), codex_bin, tmp_path, codex_api,
                      policy={"allow": ["Bash(touch *)"]})
    result = await (await supervisor.start_run(spec)).result()
    assert result.state is RunState.SUCCEEDED
    assert (tmp_path / "work" / "made-by-codex").exists()
