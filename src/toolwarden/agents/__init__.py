"""Adapters for coding agents that know nothing of toolwarden (Claude Code, Codex).

Each adapter turns the agent's own hook into the one approval path: the run's policy first
(`policy`), then a person through the workflow's approvals. Supervisor side only: the hook
command that runs inside the agent is `toolwarden.cli.hook`, which imports none of this.
"""
