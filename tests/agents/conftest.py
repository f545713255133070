"""Fixtures for the agent adapters: the real `claude` binary against a scripted model API."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.model_api import ModelAPI, Script
from tests.support import REPO

# `.ci/run` installs the pinned CLIs here (npm install --prefix .agents-cli ...).
AGENTS_BIN = REPO / ".agents-cli" / "node_modules" / ".bin"


def agent_binary(name: str) -> str | None:
    local = AGENTS_BIN / name
    if local.exists():
        return str(local)
    return shutil.which(name)


@pytest.fixture
def claude_bin() -> str:
    found = agent_binary("claude")
    if found is None:
        pytest.skip(
            "the claude binary is not installed: npm install --prefix .agents-cli "
            "@anthropic-ai/claude-code (as .ci/run does)"
        )
    return found


@pytest.fixture
def model_api() -> Iterator[ModelAPI]:
    server = ModelAPI(Script()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A project with a `build` directory for the scripted `rm -rf build` to remove."""
    work = tmp_path / "work"
    (work / "build").mkdir(parents=True)
    (work / "build" / "out.o").write_text("object\n")
    return work


@pytest.fixture
def claude_env(tmp_path: Path, model_api: ModelAPI) -> dict[str, str]:
    """Claude's environment: the scripted API, a dummy key, no other traffic, its own HOME."""
    home = tmp_path / "claude-home"
    home.mkdir()
    return {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": model_api.base_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
