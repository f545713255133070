"""`toolwarden`: the command-line entry point.

Subcommands load lazily so `--help`, `beat` and `ask` start without importing temporalio.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from toolwarden.startup import begin_startup_gc_pause, end_startup_gc_pause

# Commands that end the start-up GC pause themselves: those whose body goes straight to
# `run_async` (once temporalio is imported), and the TUI (once its first frame is painted).
# Every other command ends it before it runs.
SELF_PACED_COMMANDS = frozenset(
    {"run", "list", "show", "logs", "cancel", "approvals", "approve", "reject", "tui"}
)

# name -> "module:attribute"; `beat` and `ask` must stay free of heavy imports.
COMMANDS = {
    "up": "toolwarden.cli.serve:up",
    "server": "toolwarden.cli.serve:server",
    "worker": "toolwarden.cli.serve:worker",
    "run": "toolwarden.cli.runs:run",
    "list": "toolwarden.cli.runs:list_runs",
    "show": "toolwarden.cli.runs:show",
    "logs": "toolwarden.cli.runs:logs",
    "cancel": "toolwarden.cli.runs:cancel",
    "approvals": "toolwarden.cli.approvals:approvals",
    "approve": "toolwarden.cli.approvals:approve",
    "reject": "toolwarden.cli.approvals:reject",
    "tui": "toolwarden.cli.tui:tui",
    "config": "toolwarden.cli.config:config",
    "db": "toolwarden.cli.db:db",
    "health": "toolwarden.cli.health:health",
    "token": "toolwarden.cli.token:token",
    "beat": "toolwarden.cli.toolside:beat",
    "ask": "toolwarden.cli.toolside:ask",
    "hook": "toolwarden.cli.hook:hook",
}

HELP = {
    "up": "Start the embedded Temporal server and a worker.",
    "server": "Run only the embedded Temporal dev server.",
    "worker": "Run only a worker against the configured Temporal.",
    "run": "Run a tool under supervision.",
    "list": "List runs.",
    "show": "Show one run, its attempts and approvals.",
    "logs": "Print or follow a run's output.",
    "cancel": "Cancel a run (its tool is stopped).",
    "approvals": "List pending approvals.",
    "approve": "Approve a pending approval.",
    "reject": "Reject a pending approval (a reason is required).",
    "tui": "The operator terminal UI.",
    "config": "Inspect the effective configuration.",
    "db": "Manage the SQL mirror.",
    "health": "Ask a running worker whether it is ready.",
    "token": "Create, list and revoke approvers' HTTP API tokens.",
    "beat": "From inside a supervised tool: report liveness and progress.",
    "ask": "From inside a supervised tool: ask a person for approval.",
    "hook": "From inside claude or codex: the hook --agent installs.",
}


class AppContext:
    """Carried in `ctx.obj`: the config path now, the settings when a command needs them."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Any = None

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from toolwarden.cli.common import load_or_exit

            self._settings = load_or_exit(self.config_path)
        return self._settings


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP[name]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="TOOLWARDEN_CONFIG",
    help="Path to supervision.yaml.",
)
@click.version_option(package_name="toolwarden")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Supervise headless command-line tools as durable Temporal workflows."""
    ctx.obj = AppContext(config_path)
    if ctx.invoked_subcommand not in SELF_PACED_COMMANDS:
        end_startup_gc_pause()


def main() -> None:
    begin_startup_gc_pause()  # what it buys: toolwarden/startup.py
    try:
        cli(prog_name="toolwarden")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if "toolwarden.client" in sys.modules:
        from toolwarden.client import exit_process

        exit_process(code)
    sys.exit(code)
