"""`run`, `list`, `show`, `logs` and `cancel`."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click
from pydantic import ValidationError

from toolwarden.cli.common import CliError, echo_json, run_async, settings_of, table
from toolwarden.config import ConfigError, Settings, parse_duration, parse_liveness
from toolwarden.durations import human_seconds
from toolwarden.errors import one_line, validation_line
from toolwarden.logfiles import LogFollower
from toolwarden.models import Liveness, RunResult, RunState, RunStatus
from toolwarden.secrets import looks_like_secret

if TYPE_CHECKING:
    from toolwarden.client import Supervisor

EXIT_TIMEOUT = 124
EXIT_CANCELLED = 130
EXIT_NOT_PERMITTED = 77
FOLLOW_INTERVAL = 0.1


def exit_code_for(result: RunResult) -> int:
    """The exit code `toolwarden run` returns for a finished run (documented in the guide)."""
    if result.state is RunState.SUCCEEDED:
        return 0
    if result.state in (RunState.HUNG, RunState.TIMED_OUT):
        return EXIT_TIMEOUT
    if result.state is RunState.CANCELLED:
        return EXIT_CANCELLED
    if result.state in (RunState.REJECTED, RunState.EXPIRED):
        return EXIT_NOT_PERMITTED
    return result.exit_code or 1


def pump(follower: LogFollower) -> int:
    """Copy what the run's log files grew by to our stdout and stderr; the bytes copied."""
    copied = 0
    for growth in follower.read():
        if growth.data:
            out: IO[bytes] = sys.stdout.buffer if growth.log.stream == "stdout" else sys.stderr.buffer
            out.write(growth.data)
            out.flush()
            copied += len(growth.data)
    return copied


def _working_directory(cwd: str | None) -> str:
    """`--cwd` made absolute, else the directory `toolwarden run` was started in."""
    try:
        return str(Path(cwd).resolve()) if cwd else os.getcwd()
    except OSError as exc:  # the shell's directory was removed under it
        raise CliError(f"cannot tell the current directory ({one_line(exc)}); pass --cwd DIR", 2) from exc


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected K=V, got {pair!r}", param_hint="--env")
        env[key] = value
    return env


def _duration(value: str | None, flag: str) -> object:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from exc


def _patterns(values: tuple[str, ...]) -> list[str]:
    for value in values:
        try:
            re.compile(value)
        except re.error as exc:
            raise click.BadParameter(f"invalid pattern {value!r}: {exc}", param_hint="--prompt") from exc
    return list(values)


def _liveness(value: str | None) -> list[Liveness] | None:
    if value is None:
        return None
    signs = parse_liveness(value)
    known = [sign.value for sign in Liveness]
    for sign in signs:
        if sign not in known:
            raise click.BadParameter(
                f"unknown sign {sign!r} (use {', '.join(known)})", param_hint="--liveness"
            )
    if not signs:
        raise click.BadParameter("name at least one sign", param_hint="--liveness")
    return [Liveness(sign) for sign in signs]


async def _run(settings: Settings, spec_args: dict[str, object], detach: bool) -> int:
    from toolwarden.client import Supervisor, new_run_id

    argv = list(spec_args.pop("argv"))  # type: ignore[call-overload]
    try:
        spec = settings.run_spec(
            run_id=str(spec_args.pop("run_id") or new_run_id(
                str(spec_args.get("name") or Path(argv[0]).name)
            )),
            argv=argv,
            name=spec_args.pop("name"),  # type: ignore[arg-type]
            profile=spec_args.pop("profile"),  # type: ignore[arg-type]
            cwd=spec_args.pop("cwd"),  # type: ignore[arg-type]
            env=spec_args.pop("env"),  # type: ignore[arg-type]
            secrets=spec_args.pop("secrets"),  # type: ignore[arg-type]
            overrides=spec_args,
        )
    except ConfigError as exc:
        raise CliError(str(exc), 2) from exc
    except ValidationError as exc:
        raise CliError(f"invalid run: {validation_line(exc)}", 2) from exc
    except ValueError as exc:
        raise CliError(one_line(exc), 2) from exc
    supervisor = await Supervisor.connect(settings)
    handle = await supervisor.start_run(spec)
    if detach:
        click.echo(spec.run_id)
        return 0
    click.echo(f"toolwarden: run {spec.run_id} started", err=True)
    follower = LogFollower(settings.logs_dir / spec.run_id)
    waiting = asyncio.ensure_future(handle.result())
    try:
        while not waiting.done():
            pump(follower)
            await asyncio.wait({waiting}, timeout=FOLLOW_INTERVAL)
    except asyncio.CancelledError:
        waiting.cancel()
        raise
    pump(follower)
    result = waiting.result()
    if result.state is not RunState.SUCCEEDED:
        detail = f": {result.error}" if result.error else ""
        code = f" (exit {result.exit_code})" if result.exit_code is not None else ""
        click.echo(f"toolwarden: run {spec.run_id} {result.state.value}{code}{detail}", err=True)
    return exit_code_for(result)


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--id", "run_id", help="Run id (default: generated, readable).")
@click.option("--name", help="Tool name shown in lists (default: the profile or executable).")
@click.option("--profile", help="Tool profile from the config (default: by executable name).")
@click.option("--timeout", help="Kill the tool after this long (e.g. 30m).")
@click.option("--hang-timeout", help="Kill the tool after this long without output or heartbeat.")
@click.option("--kill-grace", help="Time between SIGTERM and SIGKILL.")
@click.option("--retries", type=click.IntRange(min=0), help="Relaunch this many times on failure or hang.")
@click.option(
    "--cwd", type=click.Path(file_okay=False),
    help="Working directory of the tool (default: the current directory).",
)
@click.option(
    "--env", "env_pairs", multiple=True, metavar="K=V",
    help="Extra environment, plain configuration shown by `show` (repeat).",
)
@click.option(
    "--secret", "secrets", multiple=True, metavar="NAME",
    help="Set $NAME from the worker's secrets file or environment at launch (repeat).",
)
@click.option("--approve-before", metavar="SUMMARY", help="Ask a person before the tool starts.")
@click.option("--approval-timeout", help="How long approvals of this run wait (e.g. 2h).")
@click.option(
    "--prompt", "prompts", multiple=True, metavar="REGEX",
    help="Run on a terminal; a prompt matching REGEX is an approval (repeat).",
)
@click.option(
    "--liveness", metavar="SIGNS",
    help="What resets --hang-timeout: output, cpu, heartbeat (comma-separated).",
)
@click.option("--detach", is_flag=True, help="Print the run id and return at once.")
@click.option("--agent", type=click.Choice(["claude", "codex"]),
              help="The tool is this coding agent: its risky calls become approvals (docs/agents.md).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    run_id: str | None,
    name: str | None,
    profile: str | None,
    timeout: str | None,
    hang_timeout: str | None,
    kill_grace: str | None,
    retries: int | None,
    cwd: str | None,
    env_pairs: tuple[str, ...],
    secrets: tuple[str, ...],
    approve_before: str | None,
    approval_timeout: str | None,
    prompts: tuple[str, ...],
    liveness: str | None,
    detach: bool,
    agent: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND under supervision: `toolwarden run [OPTIONS] -- CMD ARGS...`.

    In the foreground the tool's output streams live and the exit code is the tool's
    (124 hung or timed out, 126 not executable, 127 not found, 130 cancelled, 77 rejected).
    """
    settings = settings_of(ctx)
    env = _parse_env(env_pairs)
    for key in env:
        if looks_like_secret(key):
            click.echo(
                f"toolwarden: warning: --env {key} looks like a secret, but --env values are plain "
                f"configuration kept in the run's history; use --secret {key} instead",
                err=True,
            )
    spec_args: dict[str, object] = {
        "argv": command,
        "run_id": run_id,
        "name": name,
        "profile": profile,
        "cwd": _working_directory(cwd),
        "env": env,
        "secrets": list(secrets),
        "timeout": _duration(timeout, "--timeout"),
        "hang_timeout": _duration(hang_timeout, "--hang-timeout"),
        "kill_grace": _duration(kill_grace, "--kill-grace"),
        "retries": retries,
        "approval_timeout": _duration(approval_timeout, "--approval-timeout"),
        "prompts": _patterns(prompts),
        "liveness": _liveness(liveness),
        "agent": agent,
    }
    code = run_async(_run_with_gate(settings, spec_args, detach, approve_before))
    ctx.exit(code)


async def _run_with_gate(
    settings: Settings, spec_args: dict[str, object], detach: bool, approve_before: str | None
) -> int:
    if approve_before:
        spec_args["approve_before"] = approve_before
    return await _run(settings, spec_args, detach)


def _fmt_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(value: datetime | None) -> str:
    if value is None:
        return "-"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    return human_seconds(seconds)


async def _supervisor(settings: Settings) -> Supervisor:
    from toolwarden.client import Supervisor

    return await Supervisor.connect(settings)


@click.command("list")
@click.option("--state", type=click.Choice([s.value for s in RunState]), help="Only runs in this state.")
@click.option("--tool", help="Only runs of this tool.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document (schema in docs/guide.md).")
@click.pass_context
def list_runs(
    ctx: click.Context, state: str | None, tool: str | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first."""

    async def go() -> None:
        supervisor = await _supervisor(settings_of(ctx))
        runs = await supervisor.list_runs(
            state=RunState(state) if state else None, tool=tool, limit=limit
        )
        if as_json:
            echo_json({"runs": [r.model_dump(mode="json") for r in runs]})
            return
        if not runs:
            click.echo("no runs")
            return
        table(
            [
                [
                    r.run_id,
                    r.tool_name or "-",
                    r.state.value if r.state else r.status,
                    _fmt_time(r.started_at),
                    _age(r.started_at),
                ]
                for r in runs
            ],
            ["run", "tool", "state", "started", "age"],
        )

    run_async(go())


def _print_status(status: RunStatus, ui_url: str) -> None:
    last = status.last_attempt
    live = status.live
    fields = [
        ("run", status.run_id),
        ("tool", status.tool_name),
        ("command", shlex.join(status.argv)),
        *([("cwd", status.spec.cwd or "(the worker's)")] if status.spec else []),
        ("state", status.state.value),
        ("attempt", str(status.attempt)),
        ("retry_count", str(status.retry_count)),
        ("started", _fmt_time(status.started_at)),
        ("ended", _fmt_time(status.ended_at)),
    ]
    if status.exit_code is not None:
        fields.append(("exit_code", str(status.exit_code)))
    if status.signal:
        fields.append(("signal", status.signal))
    if status.error:
        fields.append(("error", status.error))
    if live is None and last is not None:  # no process now: how the last one ended
        fields.append(("last_attempt", f"{last.attempt} {last.outcome.value}"))
    if last is not None and last.agent_session:
        fields.append(("agent_session", last.agent_session))
    source = live or last
    if source is not None:
        fields += [
            ("pid", str(source.pid or "-")),
            ("pgid", str(source.pgid or "-")),
            ("host", source.host or "-"),
        ]
        if source.progress is not None:
            fields.append(("progress", f"{source.progress:.0%}"))
        if source.message:
            fields.append(("message", source.message))
        if source.stdout_path:
            fields.append(("stdout", source.stdout_path))
    if live is not None:
        fields.append(("last_output", _fmt_time(live.last_output_at)))
        fields.append(("last_heartbeat", _fmt_time(live.last_heartbeat_at)))
    fields.append(("web_ui", ui_url))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {value}")
    if status.approvals:
        click.echo("\napprovals:")
        table(
            [
                [
                    a.approval_id,
                    a.state.value,
                    a.decided_by or "-",
                    _fmt_time(a.requested_at),
                    _fmt_time(a.decided_at),
                    a.summary[:50],
                ]
                for a in status.approvals
            ],
            ["id", "state", "by", "requested", "decided", "summary"],
        )
    if status.audit:
        click.echo("\naudit:")
        for entry in status.audit:
            click.echo(f"  {_fmt_time(entry.at)} {entry.kind} {entry.key or ''} "
                       f"by={entry.by or '-'} {entry.detail or ''}".rstrip())
    tail = (live.tail if live else None) or (last.tail if last else [])
    if any(line.strip() for line in tail):
        click.echo("\nlast output:")
        for line in tail[-10:]:
            click.echo(f"  {line}")


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The run's status as one JSON document.")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show a run: state, attempts, process, approvals and their history."""

    async def go() -> None:
        supervisor = await _supervisor(settings_of(ctx))
        status = await supervisor.get_run(run_id).status()
        if as_json:
            echo_json(status.model_dump(mode="json"))
        else:
            _print_status(status, supervisor.web_ui_url(run_id))

    run_async(go())


@click.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
@click.option("--stderr", "stderr_only", is_flag=True, help="Only the tool's stderr.")
@click.option("--json", "as_json", is_flag=True, help="The last lines and log paths as JSON.")
@click.pass_context
def logs(ctx: click.Context, run_id: str, follow: bool, stderr_only: bool, as_json: bool) -> None:
    """Print a run's output (all attempts). Logs live in the worker's data dir."""
    settings = settings_of(ctx)

    async def go() -> None:
        supervisor = await _supervisor(settings)
        handle = supervisor.get_run(run_id)
        status = await handle.status()
        directory = settings.logs_dir / run_id
        if as_json:
            source = status.live or status.last_attempt
            echo_json(
                {
                    "run_id": run_id,
                    "state": status.state.value,
                    "directory": str(directory),
                    "stdout_path": source.stdout_path if source else None,
                    "stderr_path": source.stderr_path if source else None,
                    "tail": (source.tail if source else []),
                }
            )
            return
        follower = LogFollower(directory, ("stderr",) if stderr_only else ("stdout",))
        if not follower.files() and not follow:
            tail = (status.live or status.last_attempt)
            if tail is None or not tail.tail:
                raise CliError(f"no logs for run {run_id} under {directory}")
            click.echo(f"(log files are on {tail.host}; last lines:)", err=True)
            for line in tail.tail:
                click.echo(line)
            return
        pump(follower)
        if not follow:
            return
        waiting = asyncio.ensure_future(handle.result())
        while not waiting.done():
            pump(follower)
            await asyncio.wait({waiting}, timeout=FOLLOW_INTERVAL)
        pump(follower)

    run_async(go())


@click.command()
@click.argument("run_id")
@click.option("--reason", help="Why (recorded in the workflow history).")
@click.pass_context
def cancel(ctx: click.Context, run_id: str, reason: str | None) -> None:
    """Cancel a run: its tool's process group is stopped and the run ends `cancelled`."""

    async def go() -> None:
        supervisor = await _supervisor(settings_of(ctx))
        await supervisor.get_run(run_id).cancel(reason)
        click.echo(f"cancel requested for {run_id}")

    run_async(go())
