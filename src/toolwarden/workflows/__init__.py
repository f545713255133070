"""toolwarden.workflows."""
