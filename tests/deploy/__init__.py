"""Deployment artifacts: Dockerfile, compose, systemd units, Prometheus rules."""
