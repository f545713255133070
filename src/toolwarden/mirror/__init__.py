"""The SQL mirror: a rebuildable projection of runs, approvals and events for dashboards.

Temporal stays the source of truth. Activities hand run snapshots, events and heartbeats to a
`MirrorWriter`, which upserts them into SQLite (default, in the data dir) or PostgreSQL in the
background; `toolwarden db ...` migrates, inspects and rebuilds it.
"""

from __future__ import annotations

from toolwarden.mirror.engine import make_engine
from toolwarden.mirror.migrate import current, downgrade, head_revision, upgrade
from toolwarden.mirror.projection import apply_heartbeat, apply_update, apply_updates
from toolwarden.mirror.writer import MirrorStats, MirrorWriter

__all__ = [
    "MirrorStats",
    "MirrorWriter",
    "apply_heartbeat",
    "apply_update",
    "apply_updates",
    "current",
    "downgrade",
    "head_revision",
    "make_engine",
    "upgrade",
]
