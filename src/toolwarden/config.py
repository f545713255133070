"""One settings object, loaded from `supervision.yaml` with `TOOLWARDEN_*` environment overrides.

Lookup order for the file: `--config`, `$TOOLWARDEN_CONFIG`, `./supervision.yaml`, then the
user config dir (`$XDG_CONFIG_HOME/toolwarden/supervision.yaml`). Environment variables win over
the file; nested keys use `__` (`TOOLWARDEN_TEMPORAL__ADDRESS=host:7233`).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from toolwarden.models import AgentKind, AgentMode, AgentPolicy, ExpiryOutcome, RetryBackoff, RunSpec

CONFIG_FILE_NAME = "supervision.yaml"
ENV_CONFIG = "TOOLWARDEN_CONFIG"
DEFAULT_TASK_QUEUE = "toolwarden"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
}


def parse_duration(value: Any) -> Any:
    """Accept `600s`, `10m`, `1h30m`, `2d`, `250ms` or a number of seconds."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return timedelta(seconds=float(text))
        if text and _DURATION_PART.sub("", text).strip() == "":
            total = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
            return timedelta(seconds=total)
        if text in ("none", "null", "off", ""):
            return None
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 10m, 2h, 1d)")
    return value


def parse_size(value: Any) -> Any:
    """Accept `10MiB`, `500kb`, `1GB` or a number of bytes."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"invalid size {value!r} (use e.g. 10MiB, 500KB)")
        return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
OptionalDuration = Annotated[timedelta | None, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSSettings(Section):
    enabled: bool = False
    server_name: str | None = None
    server_root_ca_cert: Path | None = None
    client_cert: Path | None = None
    client_private_key: Path | None = None


class TemporalSettings(Section):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    api_key: str | None = None
    tls: TLSSettings = Field(default_factory=TLSSettings)
    connect_timeout: Duration = timedelta(seconds=5)
    ui_url: str | None = None


class ServerSettings(Section):
    """The embedded dev server that `toolwarden up` and `toolwarden server` start."""

    ip: str = "127.0.0.1"
    port: int = Field(default=7233, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=0, le=65535)
    db_file: Path | None = None
    log_level: str = "warn"
    sqlite_pragmas: dict[str, str] = Field(
        default_factory=lambda: {"journal_mode": "wal", "synchronous": "normal"}
    )


class WorkerSettings(Section):
    max_concurrent_tools: int = Field(default=1000, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=200, ge=1)
    heartbeat_interval: Duration = timedelta(seconds=5)
    heartbeat_timeout: Duration = timedelta(seconds=30)
    worker_loss_retries: int = Field(default=3, ge=0)
    shutdown_grace: Duration = timedelta(seconds=30)
    health_address: str | None = "127.0.0.1:9464"
    sdk_metrics_address: str | None = "127.0.0.1:9465"
    socket_dir: Path | None = None


class RunDefaults(Section):
    timeout: OptionalDuration = None
    hang_timeout: OptionalDuration = None
    kill_grace: Duration = timedelta(seconds=10)
    retries: int = Field(default=0, ge=0)
    retry_backoff: Duration = timedelta(seconds=1)
    backoff_coefficient: float = Field(default=2.0, ge=1.0)
    max_backoff: Duration = timedelta(minutes=5)
    log_cap: ByteSize = 10 * 1024 * 1024
    tail_lines: int = Field(default=50, ge=0, le=10_000)
    approval_timeout: Duration = timedelta(hours=24)
    approval_on_expiry: ExpiryOutcome = ExpiryOutcome.REJECT


class ToolProfile(Section):
    """Per-tool overrides of `defaults`; unset keys fall back to the defaults."""

    timeout: OptionalDuration = None
    hang_timeout: OptionalDuration = None
    kill_grace: Duration | None = None
    retries: int | None = Field(default=None, ge=0)
    retry_backoff: Duration | None = None
    backoff_coefficient: float | None = Field(default=None, ge=1.0)
    max_backoff: Duration | None = None
    log_cap: ByteSize | None = None
    tail_lines: int | None = Field(default=None, ge=0, le=10_000)
    approval_timeout: Duration | None = None
    approval_on_expiry: ExpiryOutcome | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # A coding agent run through its hooks (docs/agents.md): which, its policy, how it waits.
    agent: AgentKind | None = None
    policy: AgentPolicy | None = None
    agent_mode: AgentMode | None = None
    agent_hook_timeout: Duration | None = None

    @field_validator("policy", mode="after")
    @classmethod
    def _check_policy(cls, value: AgentPolicy | None) -> AgentPolicy | None:
        from toolwarden.agents.policy import check_policy

        return None if value is None else check_policy(value)


class ApprovalSettings(Section):
    approvers: list[str] = Field(default_factory=list)


class MirrorSettings(Section):
    enabled: bool = True
    url: str | None = None
    heartbeat_write_interval: Duration = timedelta(seconds=5)
    max_backlog: int = Field(default=100_000, ge=1)


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "toolwarden"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "toolwarden" / CONFIG_FILE_NAME


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOOLWARDEN_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    home: Path = Field(default_factory=default_home, description="data directory")
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    defaults: RunDefaults = Field(default_factory=RunDefaults)
    tools: dict[str, ToolProfile] = Field(default_factory=dict)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    mirror: MirrorSettings = Field(default_factory=MirrorSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    # Paths derived from `home`, named once.
    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def tool_bin_dir(self) -> Path:
        # Holds only the worker's `toolwarden` shim, first on every tool's PATH.
        return self.home / "bin"

    @property
    def server_db_file(self) -> Path:
        return self.server.db_file or self.home / "temporal.db"

    @property
    def mirror_url(self) -> str:
        return self.mirror.url or f"sqlite:///{self.home / 'mirror.db'}"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes, so they never live under a deep home.
        return self.worker.socket_dir or Path(f"/tmp/toolwarden-{os.getuid()}")

    @property
    def ui_url(self) -> str:
        if self.temporal.ui_url:
            return self.temporal.ui_url.rstrip("/")
        return f"http://{self.server.ip}:{self.server.ui_port}"

    def profile_for(self, profile: str | None, argv: list[str]) -> tuple[str | None, ToolProfile]:
        """The named profile, else the one named like the executable, else an empty one."""
        if profile is not None:
            if profile not in self.tools:
                known = ", ".join(sorted(self.tools)) or "none defined"
                raise ConfigError(f"unknown profile {profile!r} (known: {known})")
            return profile, self.tools[profile]
        executable = Path(argv[0]).name if argv else ""
        if executable in self.tools:
            return executable, self.tools[executable]
        return None, ToolProfile()

    def run_spec(
        self,
        *,
        run_id: str,
        argv: list[str],
        name: str | None = None,
        profile: str | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> RunSpec:
        """Resolve defaults, the tool profile and explicit overrides into a `RunSpec`."""
        profile_name, chosen = self.profile_for(profile, argv)
        merged: dict[str, Any] = self.defaults.model_dump()
        merged.update({k: v for k, v in chosen.model_dump(exclude={"env"}).items() if v is not None})
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return RunSpec(
            run_id=run_id,
            tool_name=name or profile_name or Path(argv[0]).name,
            argv=argv,
            cwd=cwd,
            env={**chosen.env, **(env or {})},
            profile=profile_name,
            timeout=merged["timeout"],
            hang_timeout=merged["hang_timeout"],
            kill_grace=merged["kill_grace"],
            retries=merged["retries"],
            backoff=RetryBackoff(
                initial=merged["retry_backoff"],
                coefficient=merged["backoff_coefficient"],
                maximum=merged["max_backoff"],
            ),
            log_cap_bytes=merged["log_cap"],
            tail_lines=merged["tail_lines"],
            heartbeat_timeout=self.worker.heartbeat_timeout,
            worker_loss_retries=self.worker.worker_loss_retries,
            approval_timeout=merged["approval_timeout"],
            approval_on_expiry=merged["approval_on_expiry"],
            approvers=list(self.approvals.approvers),
            approve_before=merged.get("approve_before"),
            **_agent_fields(merged),
        )


def _agent_fields(merged: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"agent": merged.get("agent")}
    for source, target in (
        ("policy", "agent_policy"),
        ("agent_mode", "agent_mode"),
        ("agent_hook_timeout", "agent_hook_timeout"),
    ):
        if merged.get(source) is not None:
            fields[target] = merged[source]
    return fields


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the key (exit 2)."""


def find_config_file(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    from_env = os.environ.get(ENV_CONFIG)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from ${ENV_CONFIG})")
        return path
    for candidate in (Path.cwd() / CONFIG_FILE_NAME, user_config_path()):
        if candidate.is_file():
            return candidate
    return None


def _describe(error: ValidationError, source: Path | None) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    where = f" in {source}" if source else ""
    more = len(error.errors()) - 1
    suffix = f" (and {more} more)" if more else ""
    return f"config error{where}: {key}: {message}{suffix}"


def load_settings(explicit: str | Path | None = None, **overrides: Any) -> Settings:
    """Load the effective settings; raise `ConfigError` with one line naming the bad key."""
    path = find_config_file(explicit)
    if path is not None:
        import yaml  # ~8 ms to import: commands run without a config file skip it

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config error in {path}{where}: not valid YAML") from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"config error in {path}: the top level must be a mapping")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": path})

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, StrEnum):
        return value.value
    return value


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data in the file's own notation (`30s`), for `config show`."""
    return {k: _plain(v) for k, v in settings.model_dump().items()}
