"""Alembic environment and revisions of the mirror schema (run through toolwarden.mirror)."""
