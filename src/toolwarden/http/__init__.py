"""The worker's HTTP face: health, metrics, the JSON API, the web page and signed decision links."""
