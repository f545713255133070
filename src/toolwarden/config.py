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

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from toolwarden.durations import duration_seconds
from toolwarden.errors import validation_line
from toolwarden.models import (
    DEFAULT_LIVENESS,
    AgentKind,
    AgentMode,
    AgentPolicy,
    ExpiryOutcome,
    Liveness,
    RetryBackoff,
    RunSpec,
    check_prompt_patterns,
)

CONFIG_FILE_NAME = "supervision.yaml"
ENV_CONFIG = "TOOLWARDEN_CONFIG"
DEFAULT_TASK_QUEUE = "toolwarden"

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
        if value.strip().lower() in ("none", "null", "off", ""):
            return None
        return timedelta(seconds=duration_seconds(value))
    return value


def parse_size(value: Any) -> Any:
    """Accept `10MiB`, `500kb`, `1GB` or a number of bytes."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"invalid size {value!r} (use e.g. 10MiB, 500KB)")
        return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    return value


def parse_liveness(value: Any) -> Any:
    """Accept `[output, cpu]` or the same as one string, `output, cpu`."""
    if isinstance(value, str):
        return [part.strip().lower() for part in value.split(",") if part.strip()]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
OptionalDuration = Annotated[timedelta | None, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
LivenessSignals = Annotated[list[Liveness], BeforeValidator(parse_liveness), Field(min_length=1)]


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
    # Server knobs passed as `--dynamic-config-value KEY=VALUE` (VALUE in JSON), for example
    # `limit.historyCount.suggestContinueAsNew: "80"` to see long-run hand-overs early.
    dynamic_config: dict[str, str] = Field(default_factory=dict)


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
    # Dotenv-like NAME=value lines, mode 0600: where `--secret NAME` values come from first,
    # before the worker's own environment (toolwarden.secrets).
    secrets_file: Path | None = None


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
    liveness: LivenessSignals = Field(default_factory=lambda: list(DEFAULT_LIVENESS))


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
    liveness: LivenessSignals | None = None
    # Prompt mode (see docs/guide.md): run on a pseudo-terminal, a matching prompt is an
    # approval answered with `answer_yes` or `answer_no`. `--prompt` adds to these patterns.
    prompts: Annotated[list[str], AfterValidator(check_prompt_patterns)] = Field(
        default_factory=list
    )
    answer_yes: str | None = None
    answer_no: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)  # names the worker resolves at launch
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
    tokens_file: Path | None = None  # the approvers' API tokens (hashes only)


class MirrorSettings(Section):
    enabled: bool = True
    url: str | None = None
    heartbeat_write_interval: Duration = timedelta(seconds=5)
    max_backlog: int = Field(default=100_000, ge=1)


class NotifyRetry(Section):
    """How a failed delivery is retried: exponential backoff, then counted as failed."""

    attempts: int = Field(default=6, ge=1, le=100)
    initial: Duration = timedelta(seconds=1)
    maximum: Duration = timedelta(minutes=5)
    timeout: Duration = timedelta(seconds=10)


class NotifyChannel(Section):
    """What every channel shares: which runs it hears about and whom its links act for."""

    # Profiles (supervision.yaml `tools:` keys) whose runs this channel hears about; empty: all.
    profiles: list[str] = Field(default_factory=list)
    # The approver the Approve/Reject links are issued to; without one, only the page link.
    approver: str | None = None


class WebhookChannel(NotifyChannel):
    url: str
    # HMAC-SHA256 key for the signature header: inline, or read from a file (preferred).
    secret: str | None = None
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _needs_a_secret(self) -> WebhookChannel:
        if not self.secret and self.secret_file is None:
            raise ValueError("a webhook needs `secret` or `secret_file` to sign its requests")
        return self


class SlackChannel(NotifyChannel):
    webhook_url: str


class SmtpChannel(NotifyChannel):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    from_addr: str = "toolwarden@localhost"
    to: list[str] = Field(min_length=1)


class NotificationSettings(Section):
    """Where approval notifications go; nothing is sent unless a channel is listed."""

    # The web page's address as a person's browser reaches it; links in messages start with it.
    # Unset: http://{worker.health_address}.
    base_url: str | None = None
    # Send a "reminded" notice this long before a pending approval expires; unset: no reminder.
    remind_before: OptionalDuration = None
    # The HMAC key signing decision links; unset: {home}/link-signing.key, created 0600.
    link_key_file: Path | None = None
    retry: NotifyRetry = Field(default_factory=NotifyRetry)
    webhooks: list[WebhookChannel] = Field(default_factory=list)
    slack: list[SlackChannel] = Field(default_factory=list)
    smtp: list[SmtpChannel] = Field(default_factory=list)


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
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)

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
    def attempts_dir(self) -> Path:
        # One ledger per worker of the process groups it supervises (toolwarden.orphans).
        return self.home / "attempts"

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
    def tokens_file(self) -> Path:
        return self.approvals.tokens_file or self.home / "tokens.json"

    @property
    def link_key_file(self) -> Path:
        return self.notifications.link_key_file or self.home / "link-signing.key"

    @property
    def used_links_file(self) -> Path:
        return self.home / "used-links"

    @property
    def web_base_url(self) -> str:
        if self.notifications.base_url:
            return self.notifications.base_url.rstrip("/")
        return f"http://{self.worker.health_address or '127.0.0.1:9464'}"

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
        secrets: list[str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> RunSpec:
        """Resolve defaults, the tool profile and explicit overrides into a `RunSpec`."""
        profile_name, chosen = self.profile_for(profile, argv)
        merged: dict[str, Any] = self.defaults.model_dump()
        chosen_values = chosen.model_dump(exclude={"env", "prompts", "secrets"})
        merged.update({k: v for k, v in chosen_values.items() if v is not None})
        extra_prompts = list((overrides or {}).get("prompts") or [])
        merged.update(
            {k: v for k, v in (overrides or {}).items() if v is not None and k != "prompts"}
        )
        return RunSpec(
            run_id=run_id,
            tool_name=name or profile_name or Path(argv[0]).name,
            argv=argv,
            cwd=cwd,
            env={**chosen.env, **(env or {})},
            secrets=list(dict.fromkeys([*chosen.secrets, *(secrets or [])])),
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
            prompts=[*chosen.prompts, *(p for p in extra_prompts if p not in chosen.prompts)],
            answer_yes=_or(merged.get("answer_yes"), "y"),
            answer_no=_or(merged.get("answer_no"), "n"),
            liveness=merged["liveness"],
            **_agent_fields(merged),
        )


def _or(value: str | None, default: str) -> str:
    # An empty answer is a real one (just Enter, taking the tool's default).
    return default if value is None else value


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
    where = f" in {source}" if source else ""
    return f"config error{where}: {validation_line(error)}"


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
