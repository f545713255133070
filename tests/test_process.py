"""The tools' `toolwarden` shim and their PATH (process control proper is tested through runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from toolwarden.process import CLI_SHIM_NAME, install_cli_shim, path_with_first


def test_the_shim_runs_this_installation_without_it_on_path(tmp_path: Path) -> None:
    directory = install_cli_shim(tmp_path / "bin")
    shim = directory / CLI_SHIM_NAME
    assert os.access(shim, os.X_OK)
    assert list(directory.iterdir()) == [shim]  # nothing else is shadowed on the tools' PATH
    done = subprocess.run(
        [CLI_SHIM_NAME, "--version"],
        env={"PATH": path_with_first(directory, "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert version("toolwarden") in done.stdout


def test_the_shim_names_the_worker_interpreter_and_is_rewritten_only_when_it_changes(
    tmp_path: Path,
) -> None:
    shim = install_cli_shim(tmp_path, interpreter="/opt/tw env/bin/python") / CLI_SHIM_NAME
    assert "exec '/opt/tw env/bin/python' -m toolwarden.cli \"$@\"" in shim.read_text()
    before = shim.stat().st_ino
    install_cli_shim(tmp_path, interpreter="/opt/tw env/bin/python")
    assert shim.stat().st_ino == before
    install_cli_shim(tmp_path, interpreter=sys.executable)
    assert shim.stat().st_ino != before
    assert sys.executable in shim.read_text()
    assert [p.name for p in tmp_path.iterdir()] == [CLI_SHIM_NAME]  # no partial file left


def test_path_puts_the_directory_first_once(tmp_path: Path) -> None:
    first = str(tmp_path)
    assert path_with_first(tmp_path, "/usr/bin:/bin") == f"{first}:/usr/bin:/bin"
    assert path_with_first(tmp_path, f"/usr/bin:{first}:/bin") == f"{first}:/usr/bin:/bin"
    assert path_with_first(tmp_path, None) == f"{first}:{os.defpath}"
