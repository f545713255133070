"""`toolwarden token create|list|revoke`: what an operator types to give an approver a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from toolwarden.cli.main import cli
from toolwarden.http.tokens import TokenStore


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("TOOLWARDEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["token", *args])


def test_create_prints_a_token_the_store_verifies(home: Path) -> None:
    result = invoke("create", "alice")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert TokenStore(home / "tokens.json").verify(token) == "alice"
    (record,) = TokenStore(home / "tokens.json").list()
    assert record.expires_at is not None
    assert 89 <= (record.expires_at - record.created_at).days <= 90  # the default, 90d


def test_list_and_revoke(home: Path) -> None:
    assert invoke("list").stdout.startswith("no tokens")
    assert invoke("create", "alice", "--expires", "12h").exit_code == 0
    assert invoke("create", "bob", "--expires", "never").exit_code == 0
    listing = invoke("list")
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "EXPIRES"]
    assert lines[1].startswith("alice") and lines[2].startswith("bob")
    assert lines[2].endswith("never")
    as_json = json.loads(invoke("list", "--json").stdout)
    assert [t["name"] for t in as_json["tokens"]] == ["alice", "bob"]
    assert as_json["tokens"][1]["expires_at"] is None
    assert "sha256" not in invoke("list", "--json").stdout

    result = invoke("revoke", "alice")
    assert (result.exit_code, result.stdout.strip()) == (0, "revoked 1 token of alice")
    assert [t.name for t in TokenStore(home / "tokens.json").list()] == ["bob"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "no spaces allowed"], "invalid approver name"),
        (["create", "alice", "--expires", "soon"], "invalid duration"),
        (["create", "alice", "--expires", "0s"], "not a positive duration"),
        (["revoke", "nobody"], "no token for 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(home: Path, args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_tokens_file_from_the_config(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "supervision.yaml"
    elsewhere = tmp_path / "secrets" / "approvers.json"
    config.write_text(f"approvals:\n  tokens_file: {elsewhere}\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "token", "create", "carol"])
    assert result.exit_code == 0, result.output
    assert TokenStore(elsewhere).verify(result.stdout.strip()) == "carol"
    assert not (home / "tokens.json").exists()


def test_the_installed_script(home: Path) -> None:
    script = Path(sys.executable).with_name("toolwarden")
    done = subprocess.run(
        [str(script), "token", "create", "dave", "--expires", "1d"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(), check=False,
    )
    assert done.returncode == 0, done.stderr
    assert TokenStore(home / "tokens.json").verify(done.stdout.strip()) == "dave"
