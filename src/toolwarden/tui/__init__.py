"""toolwarden.tui."""
