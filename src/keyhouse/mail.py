"""Outgoing email (invitations), over SMTP with the standard library."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from keyhouse.api.errors import ApiError


class MailNotSent(ApiError):
    status = 502


def send(smtp_url: str, *, sender: str, to: str, subject: str, body: str) -> None:
    """Send one plain-text message; raises MailNotSent (502) when the server refuses."""
    url = urlsplit(smtp_url)
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise MailNotSent("Email is misconfigured: KEYHOUSE_SMTP_URL must be smtp:// or smtps://")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    port = url.port or (465 if url.scheme == "smtps" else 25)
    client_class = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
    try:
        with client_class(url.hostname, port, timeout=10) as client:
            if url.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls()
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(message)
    except (OSError, smtplib.SMTPException):
        raise MailNotSent("The invitation email could not be sent; nothing was created") from None
