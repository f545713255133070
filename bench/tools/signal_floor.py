#!/usr/bin/env python3
"""The floor decider of bench/approvals.py: the minimal script plus what the conventions require.

Usage: signal_floor.py ADDRESS NAMESPACE WORKFLOW_ID KEY

Sends the same `approve` signal as signal_minimal.py, but the way any decider built to the
project's conventions must: a click command, the address and namespace from a pydantic-settings
`BaseSettings`, and the payload a pydantic model carried by the SDK's pydantic data converter.
Nothing of toolwarden is imported, so the gap between this script and signal_minimal.py is
what those libraries cost at start-up, and the gap between `toolwarden approve` and this script
is what toolwarden itself adds. The collector is paused while importing, as the toolwarden CLI
does.
"""

from __future__ import annotations

import gc

gc.disable()

import asyncio  # noqa: E402

import click  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from pydantic_settings import BaseSettings, SettingsConfigDict  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402


class FloorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOOR_")

    address: str = "127.0.0.1:7233"
    namespace: str = "default"


class DecisionSignal(BaseModel):
    key: str
    by: str


async def send(settings: FloorSettings, workflow_id: str, key: str) -> None:
    client = await Client.connect(
        settings.address, namespace=settings.namespace, data_converter=pydantic_data_converter
    )
    await client.get_workflow_handle(workflow_id).signal("approve", DecisionSignal(key=key, by="bench"))


@click.command()
@click.argument("address")
@click.argument("namespace")
@click.argument("workflow_id")
@click.argument("key")
def main(address: str, namespace: str, workflow_id: str, key: str) -> None:
    gc.enable()
    asyncio.run(send(FloorSettings(address=address, namespace=namespace), workflow_id, key))


if __name__ == "__main__":
    main()
