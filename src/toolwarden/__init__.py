"""toolwarden: supervise headless command-line tools as durable Temporal workflows."""

__version__ = "0.1.0"
