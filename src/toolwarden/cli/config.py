"""`config show`: the effective configuration."""

from __future__ import annotations

import json

import click
import yaml

from toolwarden.cli.common import settings_of
from toolwarden.config import effective_config, find_config_file


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON instead of YAML.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective config (file, environment and defaults merged)."""
    settings = settings_of(ctx)
    data = effective_config(settings)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    source = find_config_file(ctx.find_root().obj.config_path if ctx.find_root().obj else None)
    click.echo(f"# from: {source or 'defaults and environment only'}")
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
