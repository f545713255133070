"""Mail over SMTP (stdlib smtplib, on the delivery thread), with the same signed links."""

from __future__ import annotations

import json
import smtplib
from email.message import EmailMessage

import httpx

from toolwarden.config import SmtpChannel
from toolwarden.notify.message import Notice, NoticeEvent


def mail_message(channel: SmtpChannel, notice: Notice) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[toolwarden] {notice.headline}"[:250]
    message["From"] = channel.from_addr
    message["To"] = ", ".join(channel.to)
    message["Message-ID"] = f"<{notice.delivery_id.replace('/', '.')}@toolwarden>"
    lines = [
        notice.headline,
        "",
        f"Approval: {notice.approval_id}",
        f"Tool:     {notice.tool_name}",
        f"Asked:    {notice.requested_at:%Y-%m-%d %H:%M:%S} UTC",
        f"Expires:  {notice.expires_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if notice.decided_by or notice.reason:
        lines.append(f"Decided:  {notice.state.value} by {notice.decided_by or '-'} ({notice.reason or ''})")
    if notice.details is not None:
        lines += ["", "Details:", json.dumps(notice.details, indent=2, ensure_ascii=False)]
    lines.append("")
    if notice.event in (NoticeEvent.REQUESTED, NoticeEvent.REMINDED):
        if notice.links.approve:
            lines.append(f"Approve: {notice.links.approve}")
        if notice.links.reject:
            lines.append(f"Reject:  {notice.links.reject}")
        if notice.links.approve or notice.links.reject:
            lines += [
                "",
                "Each link opens a confirmation page and works once, until the approval expires.",
            ]
    lines.append(f"Open:    {notice.links.page}")
    message.set_content("\n".join(lines) + "\n")
    return message


class SmtpDelivery:
    channel = "smtp"

    def __init__(self, settings: SmtpChannel, notice: Notice, timeout: float) -> None:
        self._settings = settings
        self._message = mail_message(settings, notice)
        self._timeout = timeout
        self.description = f"{notice.event.value} {notice.approval_id} to {', '.join(settings.to)}"

    def send(self, http: httpx.Client) -> None:
        s = self._settings
        with smtplib.SMTP(s.host, s.port, timeout=self._timeout) as smtp:
            if s.starttls:
                smtp.starttls()
            if s.username:
                smtp.login(s.username, s.password or "")
            smtp.send_message(self._message)
