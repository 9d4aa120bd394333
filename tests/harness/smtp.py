"""A real SMTP server (aiosmtpd) on loopback that keeps every message it accepts."""
from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field

from .base import free_port


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage


@dataclass
class SMTPServer:
    host: str = "127.0.0.1"
    port: int = 0
    credentials: tuple[str, str] | None = None
    messages: list[ReceivedMail] = field(default_factory=list)
    _controller: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            isinstance(auth_data, LoginPassword)
            and self.credentials is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok)

    def start(self) -> "SMTPServer":
        from aiosmtpd.controller import Controller

        self.port = self.port or free_port()
        options = {}
        if self.credentials is not None:
            # Loopback only: allow AUTH without TLS so the channel's login is exercised.
            options = {"authenticator": self._authenticate, "auth_require_tls": False,
                       "auth_required": True}
        self._controller = Controller(self, hostname=self.host, port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
