"""toolwarden.cli."""
