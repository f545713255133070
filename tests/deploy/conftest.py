"""Helpers of the deployment tests: the repository root, and tools a test needs installed."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support import REPO, eventually, free_port

__all__ = ["REPO", "eventually", "free_port"]


def require_tool(name: str, apt_package: str) -> str:
    """The path of `name`; skip when absent outside CI, fail in CI (`.ci/run` installs it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: apt-get install -y {apt_package}")
        pytest.skip(f"{name} not installed (apt-get install -y {apt_package})")
    return path
