#!/usr/bin/env python3
"""The baseline decider of bench/approvals.py: temporalio alone, one `approve` signal.

Usage: signal_minimal.py ADDRESS NAMESPACE WORKFLOW_ID KEY

The payload is the documented `DecisionSignal` JSON ({"key": ..., "by": ...}) through the
SDK's default data converter, as any third-party Python program would send it.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.client import Client


async def main(address: str, namespace: str, workflow_id: str, key: str) -> None:
    client = await Client.connect(address, namespace=namespace)
    await client.get_workflow_handle(workflow_id).signal("approve", {"key": key, "by": "bench"})


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
