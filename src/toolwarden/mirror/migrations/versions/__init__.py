"""Migration revisions, named by date and slug; Alembic skips this file."""
