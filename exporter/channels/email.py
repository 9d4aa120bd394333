"""The ``email`` channel: SMTP (smtplib) with optional STARTTLS and login, on a thread of its own."""
from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from ..errors import DeliveryError
from ._common import OwnThread, one_line, plain_text, require

if TYPE_CHECKING:
    from ..config import AlertSettings


class EmailChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: tuple[str, ...], *,
                 starttls: bool = True, username: str | None = None, password=None,
                 timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self.sender, self.recipients = sender, tuple(recipients)
        self.starttls, self.username = starttls, username
        self._password = password
        self.timeout = timeout
        self._thread = OwnThread(self.name)

    def message(self, alert, resolved: bool = False) -> EmailMessage:
        state = "RESOLVED" if resolved else alert.severity.value.upper()
        msg = EmailMessage()
        msg["Subject"] = one_line(f"[opsstack {state}] {alert.title}")  # a header is one line
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="opsstack")
        msg["X-Opsstack-Fingerprint"] = alert.fingerprint
        msg.set_content(plain_text(alert, resolved) + "\n")
        return msg

    def _deliver(self, msg: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self._password.get() if self._password else "")
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"email: the server answered {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"email: {type(exc).__name__} talking to {self.host}:{self.port}") from None

    async def send(self, alert) -> None:
        await self._thread.run(self._deliver, self.message(alert))

    async def send_resolved(self, alert) -> None:
        await self._thread.run(self._deliver, self.message(alert, resolved=True))

    async def close(self) -> None:
        self._thread.close()


def from_settings(alerts: AlertSettings) -> EmailChannel:
    a = alerts
    host = require(alerts, "email", "SMTP_HOST", "smtp_host", "an SMTP server")
    sender = require(alerts, "email", "ALERT_EMAIL_FROM", "email_from", "a sender address")
    recipients = require(alerts, "email", "ALERT_EMAIL_TO", "email_to", "recipient addresses")
    if a.smtp_username and a.smtp_password is None:
        require(alerts, "email", "SMTP_PASSWORD", "smtp_password", "a password when SMTP_USERNAME is set")
    return EmailChannel(host, a.smtp_port, sender, recipients, starttls=a.smtp_starttls,
                        username=a.smtp_username, password=a.smtp_password)
