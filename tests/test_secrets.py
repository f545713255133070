"""Secrets by reference: names in the run, values resolved by the worker at launch.

The end-to-end test runs a real `toolwarden worker` (its log captured, the SQLite mirror on) and
searches every place a value could leak to: `show --json`, the workflow history (every event's
bytes, so every payload), the mirror database and the worker's log.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as random_secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.client import Client

from tests.cli.test_cli import invoke, write_config
from tests.conftest import make_settings
from tests.support import eventually
from tests.worker_process import WorkerProcess
from toolwarden.client import Supervisor
from toolwarden.config import MirrorSettings, Settings, ToolProfile
from toolwarden.models import RunSpec, RunState
from toolwarden.secrets import SecretError, read_secrets_file, redact, resolve_secrets


def write_secrets(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- resolution ------------------------------------------------------------------------------------


def test_the_secrets_file_is_dotenv_like(tmp_path: Path) -> None:
    path = write_secrets(
        tmp_path / "secrets.env",
        "# deploy keys\n\nAPI_TOKEN=abc=def\nexport DB_PASSWORD = 'p a s s'\nQUOTED=\"q\"\nEMPTY=\n",
    )
    assert read_secrets_file(path) == {
        "API_TOKEN": "abc=def", "DB_PASSWORD": "p a s s", "QUOTED": "q", "EMPTY": "",
    }


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o602])
def test_a_secrets_file_open_to_others_is_refused_in_one_line(tmp_path: Path, mode: int) -> None:
    path = write_secrets(tmp_path / "secrets.env", "API_TOKEN=value-1234\n", mode)
    with pytest.raises(SecretError) as caught:
        read_secrets_file(path)
    message = str(caught.value)
    assert f"mode {mode:04o}" in message and "chmod 600" in message and "\n" not in message
    assert "value-1234" not in message


def test_a_malformed_line_names_its_number_not_its_content(tmp_path: Path) -> None:
    path = write_secrets(tmp_path / "secrets.env", "A=1\nthis is hunter2\n")
    with pytest.raises(SecretError, match="line 2: expected NAME=value") as caught:
        read_secrets_file(path)
    assert "hunter2" not in str(caught.value)


def test_the_file_wins_over_the_environment_and_a_missing_name_is_named(tmp_path: Path) -> None:
    path = write_secrets(tmp_path / "secrets.env", "API_TOKEN=from-file\n")
    environ = {"API_TOKEN": "from-env", "OTHER_KEY": "env-only"}
    assert resolve_secrets(["API_TOKEN", "OTHER_KEY"], environ, path) == {
        "API_TOKEN": "from-file", "OTHER_KEY": "env-only",
    }
    with pytest.raises(SecretError, match=r"secret NOPE not found in .*secrets.env or in the worker"):
        resolve_secrets(["API_TOKEN", "NOPE"], environ, path)
    assert resolve_secrets([], {}, tmp_path / "absent") == {}  # no secrets named: no file read


def test_redaction_replaces_values_long_enough_to_matter() -> None:
    secrets = {"API_TOKEN": "s3cr3t-value", "FLAG": "1"}
    assert redact("token=s3cr3t-value, 1 flag", secrets) == "token=[secret API_TOKEN], 1 flag"


def test_a_run_spec_takes_only_environment_variable_names(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="invalid secret name"):
        RunSpec(run_id="r", tool_name="t", argv=["true"], secrets=["API_TOKEN=value"])
    configured = settings.model_copy(
        update={"tools": {"deploy": ToolProfile(secrets=["DEPLOY_KEY", "API_TOKEN"])}}
    )
    spec = configured.run_spec(run_id="r", argv=["deploy"], secrets=["API_TOKEN", "EXTRA"])
    assert spec.secrets == ["DEPLOY_KEY", "API_TOKEN", "EXTRA"]


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


async def history_bytes(client: Client, run_id: str) -> bytes:
    history = await client.get_workflow_handle(run_id).fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


def mirror_state(home: Path, run_id: str) -> str | None:
    database = home / "mirror.db"
    if not database.exists():
        return None
    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT state FROM tool_runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def files_holding(paths: list[Path], value: str) -> list[str]:
    return [str(p) for p in paths if p.is_file() and value.encode() in p.read_bytes()]


async def test_a_secret_value_reaches_the_tool_and_nowhere_else(
    client: Client, temporal_address: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    settings = make_settings(tmp_path / "home", temporal_address).model_copy(
        update={"mirror": MirrorSettings(enabled=True)}
    )
    from_file, from_env, plain = (f"val-{random_secrets.token_hex(12)}" for _ in range(3))
    secrets_file = write_secrets(tmp_path / "secrets.env", f"API_TOKEN={from_file}\n")
    worker = WorkerProcess(
        settings, tmp_path / "worker.log",
        TOOLWARDEN_WORKER__SECRETS_FILE=str(secrets_file), DB_PASSWORD=from_env,
    )
    workers.append(worker)
    config = write_config(settings, tmp_path / "supervision.yaml")
    script = (
        'printf %s "$API_TOKEN" | sha256sum; printf %s "$DB_PASSWORD" | sha256sum; '
        'echo "careless: $API_TOKEN $DB_PASSWORD"'
    )

    started = await invoke(
        config, "run", "--detach", "--id", "secret-run", "--secret", "API_TOKEN",
        "--secret", "DB_PASSWORD", "--", "sh", "-c", script,
    )
    assert started.exit_code == 0, started.output
    leaky = await invoke(
        config, "run", "--detach", "--id", "leaky-run", "--env", f"LEAKY_TOKEN={plain}",
        "--", "echo", plain,  # the mirror keeps the command, not the environment
    )
    assert leaky.exit_code == 0 and "--env LEAKY_TOKEN looks like a secret" in leaky.output
    supervisor = Supervisor(client, settings)
    for run in ("secret-run", "leaky-run"):
        assert (await supervisor.get_run(run).result()).state is RunState.SUCCEEDED
        await eventually(lambda run=run: mirror_state(settings.home, run) == "succeeded", timeout=30)

    shown = await invoke(config, "show", "--json", "secret-run")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    tail = document["last_attempt"]["tail"]
    # The tool saw both values: their digests are what it printed.
    for value in (from_file, from_env):
        assert hashlib.sha256(value.encode()).hexdigest() in "\n".join(tail)
    assert "careless: [secret API_TOKEN] [secret DB_PASSWORD]" in tail
    assert document["spec"]["secrets"] == ["API_TOKEN", "DB_PASSWORD"]

    history = await history_bytes(client, "secret-run")
    mirror_files = sorted(settings.home.glob("mirror.db*"))
    assert mirror_files
    for value in (from_file, from_env):
        assert value not in shown.output
        assert value.encode() not in history
        assert files_holding([*mirror_files, worker.log_path], value) == []

    # The same searches do find a value passed the plain way: they would catch a leak.
    leaky_shown = await invoke(config, "show", "--json", "leaky-run")
    assert plain in leaky_shown.output
    assert plain.encode() in await history_bytes(client, "leaky-run")
    assert files_holding(mirror_files, plain)


async def test_a_missing_secret_fails_the_start_in_one_line(
    supervisor: Supervisor, settings: Settings, worker: None, run_id
) -> None:
    name = f"ABSENT_{os.getpid()}_SECRET"
    spec = settings.run_spec(run_id=run_id("nosecret"), argv=["true"], secrets=[name])
    result = await (await supervisor.start_run(spec)).result()
    assert result.state is RunState.FAILED_TO_START
    assert result.error == f"secret {name} not found in the worker's environment"
