"""Delivering the outbox: e-mails the platform owes someone (an IBAN change announced to the
professional's previous contact). Messages are written in the same transaction as what
caused them; delivery comes after, at least once: a message is marked sent only once the mail
server has accepted it.

The recipient is stored encrypted and opened only here, one message at a time; each message
sent is an audit event, committed with its `sent_at`."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from rempart.audit.service import Recorder
from rempart.crypto import fields
from rempart.crypto.keystore import Keystore
from rempart.db.base import utcnow
from rempart.registry.models import OutboxMessage
from rempart.settings import Settings


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Sends through the configured SMTP server (STARTTLS by default)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ValueError("REMPART_SMTP_HOST is not set")
        self.settings = settings

    def send(self, message: EmailMessage) -> None:
        settings = self.settings
        assert settings.smtp_host is not None
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as server:
            if settings.smtp_starttls:
                server.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                server.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            server.send_message(message)


def deliver(
    session: Session,
    keystore: Keystore,
    *,
    sender: str,
    mailer: Mailer,
    audit: Recorder,
    limit: int = 100,
    on_error: Callable[[str], None] | None = None,
) -> int:
    """Send up to `limit` waiting messages; returns how many the mail server accepted. A
    message that fails stays waiting (the error names the message id, never the address)."""
    sent = 0
    while sent < limit:
        message = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None))
            .order_by(OutboxMessage.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if message is None:
            break
        key = keystore.field_key(session, message.dek_id)
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = fields.decrypt(key, "outbox", "recipient", str(message.id), message.recipient_ct)
        mail["Subject"] = message.subject
        mail.set_content(message.body)
        try:
            mailer.send(mail)
        except (OSError, smtplib.SMTPException) as exc:
            session.rollback()
            if on_error is not None:
                on_error(f"message {message.id}: {type(exc).__name__}")
            break
        message.sent_at = utcnow()
        audit.wrote(session, "outbox.deliver", purpose="notice", count=1, detail={"message": str(message.id)})
        session.commit()
        sent += 1
    return sent
