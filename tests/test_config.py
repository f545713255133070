"""Settings: the YAML file, environment overrides, profiles and one-line errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from toolwarden.config import (
    ConfigError,
    Settings,
    find_config_file,
    load_settings,
    parse_duration,
    parse_size,
)

EXAMPLE = Path(__file__).parent.parent / "examples" / "supervision.yaml"


def keys_of(model: type[BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        found.add(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= keys_of(annotation, f"{prefix}{name}.")
    return found


def test_example_loads_and_mentions_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(EXAMPLE)
    assert settings.tools["aider"].hang_timeout == timedelta(seconds=600)
    assert settings.home == Path.home() / ".local" / "share" / "toolwarden"
    text = EXAMPLE.read_text()
    for key in keys_of(Settings):
        assert f"{key.rsplit('.', 1)[-1]}:" in text, f"{key} is not in the example"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLWARDEN_TEMPORAL__ADDRESS", "elsewhere:7233")
    monkeypatch.setenv("TOOLWARDEN_HOME", "/srv/tw")
    settings = load_settings(EXAMPLE)
    assert settings.temporal.address == "elsewhere:7233"
    assert settings.home == Path("/srv/tw")


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert find_config_file() is None
    user = tmp_path / "xdg" / "toolwarden" / "supervision.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("defaults: {retries: 1}\n")
    assert find_config_file() == user
    local = tmp_path / "supervision.yaml"
    local.write_text("defaults: {retries: 2}\n")
    assert load_settings().defaults.retries == 2
    env_file = tmp_path / "env.yaml"
    env_file.write_text("defaults: {retries: 3}\n")
    monkeypatch.setenv("TOOLWARDEN_CONFIG", str(env_file))
    assert load_settings().defaults.retries == 3
    assert load_settings(user).defaults.retries == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope: 1\n", "nope: unknown key"),
        ("defaults:\n  timeout: soon\n", "defaults.timeout: invalid duration 'soon'"),
        ("defaults:\n  retries: -1\n", "defaults.retries: Input should be greater than or equal to 0"),
        ("tools:\n  aider:\n    hang_timout: 5s\n", "tools.aider.hang_timout: unknown key"),
        ("defaults: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("defaults:\n  log_cap: lots\n", "defaults.log_cap: invalid size 'lots'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLWARDEN_DEFAULTS__RETRIES", "many")
    with pytest.raises(ConfigError, match=r"defaults\.retries"):
        load_settings(EXAMPLE)


def test_run_spec_layers_defaults_profile_and_flags() -> None:
    settings = load_settings(EXAMPLE)
    spec = settings.run_spec(run_id="r1", argv=["aider", "--yes"])
    assert (spec.profile, spec.retries, spec.hang_timeout) == ("aider", 2, timedelta(minutes=10))
    assert spec.env == {"AIDER_NO_AUTO_COMMITS": "1"}
    flagged = settings.run_spec(
        run_id="r2", argv=["/usr/bin/aider"], overrides={"retries": 0}, env={"X": "1"}
    )
    assert flagged.retries == 0 and flagged.env == {"AIDER_NO_AUTO_COMMITS": "1", "X": "1"}
    plain = settings.run_spec(run_id="r3", argv=["ls"], name="lister")
    assert (plain.profile, plain.tool_name, plain.retries) == (None, "lister", 0)
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        settings.run_spec(run_id="r4", argv=["ls"], profile="nope")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25), ("5", 5), (7, 7)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_parse_size() -> None:
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("500kb") == 500_000
    assert parse_size(42) == 42
