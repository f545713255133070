"""Files with narrow permissions: after a real run, `stat` shows 0700 directories, 0600 files.

The run happens under umask 000, the most open there is, so what is private is private because
toolwarden made it so, not because of the umask the tests happen to run with.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.deploy.test_systemd_units import SYSTEMD, one, parse_unit
from tests.support import eventually, free_port
from toolwarden.client import Supervisor, connect_client
from toolwarden.config import MirrorSettings, ServerSettings
from toolwarden.files import private_dir
from toolwarden.models import RunState
from toolwarden.worker.devserver import DevServer
from toolwarden.worker.runner import WorkerService


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.lstat().st_mode))


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
async def test_home_logs_sockets_ledgers_and_databases_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True, mode=0o777)  # left open by an older version
    home.chmod(0o755)
    port = free_port()
    settings = make_settings(home, f"127.0.0.1:{port}").model_copy(
        update={
            "server": ServerSettings(port=port, ui_port=0, log_level="error"),
            "mirror": MirrorSettings(enabled=True),
        }
    )
    settings.worker.socket_dir = tmp_path / "sock"
    server = DevServer(settings)
    await server.start()
    stop = asyncio.Event()
    service: asyncio.Task[None] | None = None
    try:
        client = await connect_client(settings)
        started = asyncio.Event()
        service = asyncio.create_task(WorkerService(settings, client).run(stop, started.set))
        await eventually(started.is_set, timeout=30)
        supervisor = Supervisor(client, settings)
        spec = settings.run_spec(
            run_id="private-run", argv=["sh", "-c", "echo out; echo err >&2; toolwarden beat"]
        )
        result = await (await supervisor.start_run(spec)).result()
        assert result.state is RunState.SUCCEEDED
        attempt_logs = sorted((settings.logs_dir / "private-run").iterdir())
        assert [p.name for p in attempt_logs] == ["attempt-1.stderr.log", "attempt-1.stdout.log"]
        await eventually(lambda: (home / "mirror.db-wal").exists() or (home / "mirror.db").stat().st_size)

        directories = [
            home, settings.logs_dir, settings.logs_dir / "private-run", settings.attempts_dir,
            settings.tool_bin_dir, settings.socket_dir,
        ]
        files = [
            *attempt_logs, *home.glob("mirror.db*"), *home.glob("temporal.db*"),
            server.log_path,
        ]
        assert {str(p): mode(p) for p in directories} == {str(p): "0o700" for p in directories}
        assert {str(p): mode(p) for p in files} == {str(p): "0o600" for p in files}
        assert len([p for p in files if p.name.startswith("temporal.db")]) >= 1
    finally:
        stop.set()
        if service is not None:
            await asyncio.wait_for(service, timeout=60)
        await server.stop()


def test_a_directory_another_user_made_first_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory owned by another user")
    squatted = tmp_path / "toolwarden-sockets"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        private_dir(squatted)


def test_a_symlink_is_not_taken_for_a_directory(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "link")


@pytest.mark.parametrize(
    "unit", ["toolwarden-worker.service", "toolwarden-server.service", "user/toolwarden-up.service"]
)
def test_systemd_units_create_private_files(unit: str) -> None:
    parsed = parse_unit(SYSTEMD / unit)
    assert one(parsed, "Service", "UMask") == "0077"
    for key in ("StateDirectoryMode", "RuntimeDirectoryMode"):
        if key in parsed["Service"]:
            assert one(parsed, "Service", key) == "0700"
