"""The `notifications` section of supervision.yaml."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from toolwarden.config import ConfigError, NotificationSettings, WebhookChannel, load_settings
from toolwarden.notify import channels_from

YAML = """
worker:
  health_address: 0.0.0.0:9464
notifications:
  remind_before: 1h
  webhooks:
    - url: https://hooks.example/toolwarden
      secret_file: {secret}
      approver: alice
      profiles: [deployer]
  slack:
    - webhook_url: https://hooks.slack.com/services/T/B/X
      approver: alice
  smtp:
    - host: mail.example
      port: 587
      starttls: true
      to: [ops@example.com]
"""


def test_the_section_loads_from_yaml(tmp_path: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("s3cret\n")
    path = tmp_path / "supervision.yaml"
    path.write_text(YAML.format(secret=secret))
    settings = load_settings(path)
    n = settings.notifications
    assert n.remind_before == timedelta(hours=1)
    assert n.webhooks[0].profiles == ["deployer"] and n.webhooks[0].approver == "alice"
    assert n.smtp[0].starttls and n.smtp[0].approver is None
    assert settings.web_base_url == "http://0.0.0.0:9464"
    assert settings.link_key_file == settings.home / "link-signing.key"
    assert [c.settings for c in channels_from(n)] == [n.webhooks[0], n.slack[0], n.smtp[0]]


def test_an_unknown_key_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "supervision.yaml"
    path.write_text("notifications:\n  webhooks:\n    - url: x\n      secrte: y\n")
    with pytest.raises(ConfigError, match=r"notifications\.webhooks\.0\.secrte: unknown key"):
        load_settings(path)


def test_a_webhook_without_a_secret_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "supervision.yaml"
    path.write_text("notifications:\n  webhooks:\n    - url: https://x\n")
    with pytest.raises(ConfigError, match=r"notifications\.webhooks\.0: .*needs `secret` or `secret_file`"):
        load_settings(path)


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        channels_from(NotificationSettings(webhooks=[WebhookChannel(url="http://x", secret_file=empty)]))
