"""Slack incoming webhook: the summary, and Approve / Reject buttons carrying signed links.

Incoming webhooks are write-only URLs (the URL is the secret), so the message is plain Block Kit
with link buttons: pressing one opens the confirmation page, whose POST decides. Slack never
calls back into toolwarden, so no Slack app or public endpoint is needed.
"""

from __future__ import annotations

import json

import httpx
from pydantic import JsonValue

from toolwarden.notify.message import Notice, NoticeEvent

_DETAILS_LIMIT = 2500  # a section's text may hold 3000 characters


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(notice: Notice) -> dict[str, JsonValue]:
    """The Block Kit payload for one notice."""
    title = {
        NoticeEvent.REQUESTED: "Approval requested",
        NoticeEvent.REMINDED: "Approval still pending",
        NoticeEvent.EXPIRED: "Approval expired",
        NoticeEvent.DECIDED: f"Approval {notice.state.value}"
        + (f" by {notice.decided_by}" if notice.decided_by else ""),
    }[notice.event]
    expires = int(notice.expires_at.timestamp())
    blocks: list[JsonValue] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*{_escape(title)}* · `{_escape(notice.tool_name)}`\n{_escape(notice.summary)}",
            },
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"{_escape(notice.approval_id)} · expires "
                    f"<!date^{expires}^{{date_short_pretty}} {{time}}|{notice.expires_at.isoformat()}>",
                }
            ],
        },
    ]
    if notice.details is not None and notice.event in (NoticeEvent.REQUESTED, NoticeEvent.REMINDED):
        details = json.dumps(notice.details, indent=2, ensure_ascii=False)
        if len(details) > _DETAILS_LIMIT:
            details = details[:_DETAILS_LIMIT] + "\n… (the page shows all of it)"
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{_escape(details)}```"}}
        )
    buttons: list[JsonValue] = []
    if notice.event in (NoticeEvent.REQUESTED, NoticeEvent.REMINDED):
        if notice.links.approve:
            buttons.append(_button("Approve", notice.links.approve, "approve", "primary"))
        if notice.links.reject:
            buttons.append(_button("Reject", notice.links.reject, "reject", "danger"))
    buttons.append(_button("Open", notice.links.page, "open", None))
    blocks.append({"type": "actions", "elements": buttons})
    return {"text": notice.headline, "blocks": blocks}


def _button(label: str, url: str, action_id: str, style: str | None) -> dict[str, JsonValue]:
    button: dict[str, JsonValue] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "url": url,
        "action_id": action_id,
    }
    if style:
        button["style"] = style
    return button


class SlackDelivery:
    channel = "slack"

    def __init__(self, webhook_url: str, notice: Notice) -> None:
        self.webhook_url = webhook_url
        self._payload = slack_message(notice)
        self.description = f"{notice.event.value} {notice.approval_id} to Slack"

    def send(self, http: httpx.Client) -> None:
        http.post(self.webhook_url, json=self._payload).raise_for_status()
