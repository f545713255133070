"""toolwarden.worker."""
