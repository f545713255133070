"""The worker's HTTP face: one FastAPI app (health, metrics, the JSON API, the web page)."""
