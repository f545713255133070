"""toolwarden.activities."""
